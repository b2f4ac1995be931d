"""Sign-in hardening shared by the admin and the portal: the client IP and staff session length."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    """The client's IP address, trusting X-Forwarded-For only as far as our own proxies go.

    Each trusted proxy appends the address it saw, so with N proxies the client is the N-th entry
    from the right. Entries further left were written by the client and may be forged; with no
    trusted proxy (the default) the header is ignored altogether.
    """
    remote = request.META.get("REMOTE_ADDR", "")
    count = settings.TRUSTED_PROXY_COUNT
    if count <= 0:
        return remote
    hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
    if len(hops) < count:
        return remote
    return hops[-count]


@receiver(user_logged_in)
def shorten_staff_sessions(sender, request: HttpRequest | None, user, **kwargs) -> None:
    if request is not None and getattr(user, "is_staff", False):
        request.session.set_expiry(settings.STAFF_SESSION_AGE)
