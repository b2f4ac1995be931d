"""The language and time zone of every portal page, chosen for the person reading it.

In order: the contact's own setting (``ClientMember.language``, changed on /portal/settings/), else
the default staff set on their client (``Client.default_language``), else the browser's
``Accept-Language`` (Django's LocaleMiddleware logic, without a language prefix in URLs). Dates
and times show in the contact's ``time_zone`` when they chose one. The staff admin stays in
``settings.LANGUAGE_CODE``: its project texts are written for the agency's staff, in English.

The membership is read once here and kept on the request, so portal pages that need it
(``portal_member_required``) do not read it a second time.
"""

from __future__ import annotations

import zoneinfo

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone, translation
from django.utils.cache import patch_vary_headers

from . import selectors
from .language import member_language


def language_for(request: HttpRequest, member) -> str:
    """The contact's language, else their client's default, else the browser's, else the default."""
    return member_language(member) or translation.get_language_from_request(request, check_path=False)


def time_zone_for(member) -> zoneinfo.ZoneInfo | None:
    if member is None or not member.time_zone:
        return None
    try:
        return zoneinfo.ZoneInfo(member.time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


class ContactLocaleMiddleware:
    """After AuthenticationMiddleware: activates the reader's language and time zone."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.admin_prefix = "/admin/"

    def __call__(self, request: HttpRequest):
        if request.path.startswith(self.admin_prefix):
            language, zone, member = settings.LANGUAGE_CODE, None, None
        else:
            member = selectors.member_for_request(request)
            language, zone = language_for(request, member), time_zone_for(member)
        translation.activate(language)
        request.LANGUAGE_CODE = translation.get_language()
        if zone is not None:
            timezone.activate(zone)
        else:
            timezone.deactivate()
        try:
            response = self.get_response(request)
        finally:
            timezone.deactivate()
        patch_vary_headers(response, ("Accept-Language",))
        response.headers.setdefault("Content-Language", request.LANGUAGE_CODE)
        return response
