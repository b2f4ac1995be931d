"""Response policies shared by the portal's views (clients and connections): caching and Referer."""

from __future__ import annotations

from functools import wraps

from django.http import HttpResponse


def private_page(view):
    """Never cached, and no Referer to any other site (security checklist OA-17).

    `same-origin`, not `no-referrer`: under `no-referrer` Chromium sends `Origin: null` with a
    form POST, which Django's CSRF check (rightly) refuses, so every form on the page would fail.
    `same-origin` still sends nothing to Cloudflare or anyone else. Responses whose own URL carries a
    secret (the callback, the invitation link, the redirect to Cloudflare) use `no_referrer`.
    """

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        response["Cache-Control"] = "no-store"
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    return wrapped


def no_referrer(response: HttpResponse) -> HttpResponse:
    """For a redirect away from a URL that carries a code, state or token."""
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response
