"""Staff ask a client to re-consent: an email to the client's owner contacts with a portal link
that asks only for what is missing (or for a full reconnect when the grant is gone)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import translation

from clients.language import addresses_by_language
from clients.models import ClientMember
from connections import scopes as scope_words

from ..models import Grant, GrantEvent
from .events import event_record

logger = logging.getLogger(__name__)

# Grants whose scopes can be completed in place; others need a full reconnect.
COMPLETABLE = (Grant.Status.ACTIVE, Grant.Status.REFRESH_FAILING, Grant.Status.NEEDS_RECONSENT)


@dataclass(frozen=True)
class ReconsentRequest:
    grant: Grant
    recipients: int
    kind: str  # "add_scopes" or "reconnect"


def reconsent_needed(*, grant: Grant) -> str | None:
    """What the client should do: 'add_scopes', 'reconnect', or None (nothing is missing)."""
    if grant.status in (Grant.Status.LOST, Grant.Status.REVOKED):
        return "reconnect"
    if grant.status in COMPLETABLE and (
        grant.missing_required_scopes or grant.declined_scopes or not grant.refresh_token_fp
    ):
        return "add_scopes" if grant.refresh_token_fp else "reconnect"
    return None


def reconsent_link_send(*, grant: Grant, sent_by: AbstractBaseUser) -> ReconsentRequest | None:
    """Email the client's owner contacts; record who asked. None when there is nothing to ask for."""
    kind = reconsent_needed(grant=grant)
    if kind is None:
        return None
    route = "connections:add_scopes" if kind == "add_scopes" else "connections:reconnect"
    link = f"{settings.SITE_URL}{reverse(route, kwargs={'code': grant.code})}"
    owners = list(
        ClientMember.objects.filter(client_id=grant.client_id, role=ClientMember.Role.OWNER, joined_at__isnull=False)
        .select_related("user")
        .values_list("user__email", flat=True)
    )
    if not owners:
        return ReconsentRequest(grant=grant, recipients=0, kind=kind)
    missing = [*grant.missing_required_scopes, *grant.declined_scopes] if kind == "add_scopes" else []
    with transaction.atomic():
        event_record(
            grant=grant,
            kind=GrantEvent.Kind.RECONSENT_REQUESTED,
            actor_type=GrantEvent.Actor.STAFF,
            actor=sent_by,
            message=f"Asked {len(owners)} contact(s) to {'grant the missing permissions' if missing else 'reconnect'}.",
            detail={"kind": kind, "scopes": missing, "recipients": len(owners)},
        )
        context = {
            "grant": grant,
            "client": grant.client,
            "link": link,
            "site_name": settings.SITE_NAME,
            "missing_scopes": missing,
            "reconnect": kind == "reconnect",
        }
        transaction.on_commit(lambda: _send(owners=owners, context=context))
    return ReconsentRequest(grant=grant, recipients=len(owners), kind=kind)


def _send(*, owners: list[str], context: dict) -> None:
    """One rendering per language the owners read (their setting, else the client's default)."""
    for language, addresses in addresses_by_language(owners, client_id=context["client"].pk).items():
        with translation.override(language):
            words = {**context, "missing": [scope_words.describe(s) for s in context["missing_scopes"]]}
            subject = render_to_string("emails/reconsent_subject.txt", words).strip()
            text = render_to_string("emails/reconsent_body.txt", words)
            html = render_to_string("emails/reconsent_body.html", words)
        for address in addresses:
            message = EmailMultiAlternatives(subject=subject, body=text, to=[address])
            message.attach_alternative(html, "text/html")
            message.send()
    logger.info("Sent a re-consent link for grant %s to %d contact(s)", context["grant"].pk, len(owners))
