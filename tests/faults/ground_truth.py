"""Judging a fault run by the sandbox's ground truth (what Cloudflare would know)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from connections.models import Alert, Grant
from connections.services.refresh import grants_dispatch_due_refreshes
from tests.sandbox_grants import mint_grants

TOKEN_CALLS = "token:refresh_token"


def due_grants(cf_sandbox, app, client, count: int, *, expires_in: float = 30) -> list[Grant]:
    """`count` grants minted at the sandbox, all due for a refresh now.

    Their access tokens outlive a dead holder's lease plus the settle time (as in production: a
    refresh starts 15 minutes before expiry), so an unanswered refresh can be decided by evidence."""
    grants = mint_grants(cf_sandbox, app=app, client=client, count=count)
    now = timezone.now()
    Grant.objects.filter(pk__in=[g.pk for g in grants]).update(
        authorized_at=now - timedelta(hours=1),
        access_expires_at=now + timedelta(seconds=expires_in),
        next_refresh_at=now - timedelta(seconds=1),
    )
    return list(Grant.objects.filter(pk__in=[g.pk for g in grants]).order_by("pk"))


def truth(cf_sandbox, app) -> dict[str, dict]:
    """Sandbox grants of this app by the portal's cf_user_id (the sandbox grant id, hex)."""
    return {t["id"].replace("-", ""): t for t in cf_sandbox.state(client_id=app.client_id)["grants"]}


def sweep() -> None:
    grants_dispatch_due_refreshes()


def settled(cf_sandbox, app, *, allow_lost: bool = False, revoked: set[int] = frozenset()) -> bool:
    """Every grant is fresh and holds the current token (or is revoked / lost as allowed)."""
    return not unsettled(cf_sandbox, app, allow_lost=allow_lost, revoked=revoked)


def unsettled(cf_sandbox, app, *, allow_lost: bool = False, revoked: set[int] = frozenset()) -> list[str]:
    """The grants that are not settled, each with the fields that say why (for a failure message)."""
    known = truth(cf_sandbox, app)
    soon = timezone.now() + timedelta(minutes=10)
    found: list[str] = []
    for grant in Grant.objects.filter(app=app).order_by("pk"):
        if grant.pk in revoked:
            if grant.status != Grant.Status.REVOKED:
                found.append(f"grant={grant.pk} status={grant.status} (expected revoked)")
            continue
        if allow_lost and grant.status == Grant.Status.LOST:
            continue
        current = known[grant.cf_user_id]["current_refresh_token_sha256"]
        if not (
            grant.status == Grant.Status.ACTIVE and grant.access_expires_at > soon and grant.refresh_token_fp == current
        ):
            found.append(
                f"grant={grant.pk} status={grant.status} expires={grant.access_expires_at:%H:%M:%S} "
                f"current_token={grant.refresh_token_fp == current} generation={grant.refresh_generation} "
                f"lease_until={grant.refresh_lease_until} uncertain_since={grant.refresh_uncertain_since} "
                f"next_refresh_at={grant.next_refresh_at} last_error={grant.last_error[:120]!r}"
            )
    return found


def reuse_count(cf_sandbox, app) -> int:
    return cf_sandbox.state(client_id=app.client_id)["reuse_count"]


def unheard_rotations(cf_sandbox, app) -> set[int]:
    """Grants whose refresh token rotated at the sandbox more often than the portal stored a rotation.

    The sandbox's `refresh_count` counts every rotation it made; the portal's `refresh_count` every
    answer it stored. A grant with more of the former had a rotation whose answer never arrived.
    """
    known = truth(cf_sandbox, app)
    return {
        grant.pk
        for grant in Grant.objects.filter(app=app)
        if known[grant.cf_user_id]["refresh_count"] > grant.refresh_count
    }


def lost(app) -> set[int]:
    return set(Grant.objects.filter(app=app, status=Grant.Status.LOST).values_list("pk", flat=True))


def assert_nothing_wrongly_ended(cf_sandbox, app, *, lost_at_most: int | None = None) -> dict:
    """Zero reuses, nothing called revoked, every lost grant really rotated unheard. Returns figures."""
    reuses = reuse_count(cf_sandbox, app)
    gone = lost(app)
    unheard = unheard_rotations(cf_sandbox, app)
    assert reuses == 0, f"{reuses} refresh tokens re-presented after their rotation"
    assert not Grant.objects.filter(app=app, status=Grant.Status.REVOKED).exists()
    assert not Alert.objects.filter(kind=Alert.Kind.REVOKED).exists()
    assert gone <= unheard, f"lost {sorted(gone)} but only {sorted(unheard)} rotated unheard"
    assert Alert.objects.filter(kind=Alert.Kind.LOST).count() == len(gone)
    if lost_at_most is not None:
        assert len(gone) <= lost_at_most
    return {"reused": reuses, "lost": len(gone), "rotated_unheard": len(unheard)}
