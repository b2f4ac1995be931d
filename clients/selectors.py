"""Reads for the client portal, with their joins.

Every portal read of a grant goes through `grant_get_for_member`: it filters by the signed-in
user's own membership, so another client's grant is a 404 (not a 403 that would confirm it
exists). Lists come from `portal_grants`, whose prefetches keep the page at a fixed number of
queries however many grants, accounts and zones a client has.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db.models import Prefetch, QuerySet
from django.http import Http404

from connections.models import GRANT_SECRET_COLUMNS, AuthorizationRequest, Grant

from .models import ClientMember, CloudflareAccount, Zone

# Statuses shown as "current" connections; the rest are history.
CURRENT_STATUSES = ("active", "refresh_failing", "needs_reconsent", "disconnecting")


def member_for_user(*, user: AbstractBaseUser | AnonymousUser) -> ClientMember | None:
    """The portal membership of a signed-in user (one query, client joined), or None."""
    if not user.is_authenticated:
        return None
    return (
        ClientMember.objects.select_related("client", "user")
        .filter(user_id=user.pk, client__is_active=True, user__is_active=True)
        .first()
    )


_MEMBER_ATTR = "_portal_member"


def member_for_request(request) -> ClientMember | None:
    """`member_for_user` for the request's user, read once per request (kept on the request)."""
    user = getattr(request, "user", None)
    if user is None:
        return None
    cached = getattr(request, _MEMBER_ATTR, None)
    if cached is not None and cached[0] == user.pk:
        return cached[1]
    member = member_for_user(user=user)
    setattr(request, _MEMBER_ATTR, (user.pk, member))
    return member


def grant_get_for_member(*, user: AbstractBaseUser, code: str) -> Grant:
    """The grant `code` if it belongs to the client the user is a member of; Http404 otherwise.

    The scope is in the WHERE clause (a join through the membership), not a check after loading:
    one query, and no branch that could forget it.
    """
    try:
        return (
            Grant.objects.select_related("client", "app", "authorized_by")
            .defer(*GRANT_SECRET_COLUMNS)
            .get(code=code, client__members__user_id=user.pk, client__is_active=True)
        )
    except (Grant.DoesNotExist, ValidationError):  # ValidationError: `code` is not a UUID
        raise Http404("No such connection") from None


def portal_grants(*, client_id: int) -> list[Grant]:
    """A client's grants, newest first, with app, authorizing user, accounts and live zones.

    Queries: grants (+ app + authorized_by joined), accounts (one IN query), zones (one IN query).
    """
    live_zones = Zone.objects.filter(removed_at__isnull=True).order_by("name")
    accounts = CloudflareAccount.objects.order_by("name").prefetch_related(Prefetch("zones", queryset=live_zones))
    qs: QuerySet[Grant] = (
        Grant.objects.filter(client_id=client_id)
        .select_related("app", "authorized_by")
        .defer(*GRANT_SECRET_COLUMNS)
        .prefetch_related(Prefetch("accounts", queryset=accounts))
        .order_by("-authorized_at", "-pk")
    )
    return list(qs)


def authorization_request_for_client(*, client_id: int, pk: int) -> AuthorizationRequest | None:
    """A consent attempt of this client (for showing its outcome), or None."""
    return AuthorizationRequest.objects.select_related("app", "grant").filter(pk=pk, client_id=client_id).first()
