"""Which language a client contact reads: their own setting, else their client's default.

Pages add the browser's ``Accept-Language`` after these two (``clients/middleware.py``); emails have
no browser, so they fall back to ``settings.LANGUAGE_CODE``. Emails to contacts are rendered once
per language, inside ``translation.override``.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.utils import translation

from .models import Client, ClientMember


def supported_language(code: str | None) -> str | None:
    """The configured language for `code` ("fr-CA" -> "fr"), or None."""
    if not code:
        return None
    try:
        return translation.get_supported_language_variant(code)
    except LookupError:
        return None


def member_language(member: ClientMember | None) -> str | None:
    """The contact's own language, else their client's default, else None (the caller decides)."""
    if member is None:
        return None
    return supported_language(member.language) or supported_language(member.client.default_language)


def addresses_by_language(addresses: Iterable[str], *, client_id: int) -> dict[str, list[str]]:
    """Email addresses grouped by the language their contact reads (two queries, whatever the count).

    An address without a contact of this client (typed in by staff) gets the client's default.
    """
    wanted = list(dict.fromkeys(a for a in addresses if a))
    if not wanted:
        return {}
    default = (
        supported_language(Client.objects.filter(pk=client_id).values_list("default_language", flat=True).first())
        or settings.LANGUAGE_CODE
    )
    own = dict(
        ClientMember.objects.filter(client_id=client_id, user__email__in=wanted).values_list("user__email", "language")
    )
    grouped: dict[str, list[str]] = {}
    for address in wanted:
        grouped.setdefault(supported_language(own.get(address)) or default, []).append(address)
    return grouped
