"""Disconnect a grant, then revoke it at Cloudflare (RFC 7009) until Cloudflare confirms.

Two steps, so the contact's click takes effect at once whatever Cloudflare's state:

1. `grant_disconnect` (in the web request): a compare-and-set from a live status to
   `disconnecting`. The refresh engine and the health checks only touch live grants, so from this
   commit on nothing uses the tokens. Events, a staff notice, and the revocation task after commit.
2. `grant_revoke_at_cloudflare` (in a task, retried by a sweep): revoke the refresh token, then the
   access token. Each confirmed revocation erases that token at once; when both are gone the grant
   is `disconnected`. 5xx / 503 / 429 / network trouble leave it `disconnecting` with a backoff.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from .. import cloudflare, crypto
from ..models import LIVE_STATUSES, Alert, Grant, GrantEvent
from .events import alert_open, event_record

logger = logging.getLogger(__name__)


class NotDisconnectable(Exception):
    """The grant is not live (already disconnecting or ended)."""


def _enqueue_revoke(grant_id: int) -> None:
    from ..tasks import revoke_grant_task

    try:
        revoke_grant_task.delay(grant_id)
    except Exception:  # noqa: BLE001 - a broker outage only delays it: the revoke sweep finds the row
        logger.warning("Could not enqueue revocation of grant %s; the sweep will", grant_id)


def grant_disconnect(*, grant: Grant, actor: AbstractBaseUser | None, actor_type: str) -> Grant:
    """Stop using a grant now and schedule its revocation at Cloudflare. Raises NotDisconnectable."""
    now = timezone.now()
    end_reason = (
        Grant.EndReason.DISCONNECTED_BY_STAFF
        if actor_type == GrantEvent.Actor.STAFF
        else Grant.EndReason.DISCONNECTED_BY_CLIENT
    )
    with transaction.atomic():
        # Compare-and-set: of two clicks (or a click and a refresh marking it revoked), one wins.
        changed = Grant.objects.filter(pk=grant.pk, status__in=LIVE_STATUSES).update(
            status=Grant.Status.DISCONNECTING,
            end_reason=end_reason,
            status_changed_at=now,
            next_revoke_at=now,
            revoke_attempts=0,
            next_refresh_at=None,
            next_check_at=None,
        )
        if changed != 1:
            raise NotDisconnectable("This connection is not active.")
        grant.refresh_from_db()
        who = actor.get_username() if actor is not None and actor.is_authenticated else "system"
        event_record(
            grant=grant,
            kind=GrantEvent.Kind.DISCONNECT_REQUESTED,
            actor_type=actor_type,
            actor=actor,
            message=f"Disconnect requested by {who}",
            detail={"reason": end_reason},
        )
        alert_open(
            kind=Alert.Kind.DISCONNECTED,
            grant=grant,
            message=f"{grant.client.name}: {who} disconnected the grant of "
            f"{grant.cf_user_email or grant.cf_user_id}; revoking it at Cloudflare",
        )
        transaction.on_commit(lambda: _enqueue_revoke(grant.pk))
    return grant


@dataclass(frozen=True)
class RevokeResult:
    done: bool
    retry_at: datetime | None = None
    skipped: bool = False


def revoke_backoff(*, attempts: int, retry_after: float | None = None) -> timedelta:
    """Exponential backoff with jitter, capped; never shorter than Cloudflare's Retry-After."""
    base = settings.GRANT_REVOKE_BACKOFF_BASE
    cap = settings.GRANT_REVOKE_BACKOFF_MAX
    delay = min(cap, base * (2 ** max(0, attempts - 1)))
    delay = delay * random.uniform(0.8, 1.2)
    if retry_after:
        delay = max(delay, min(retry_after, cap))
    return timedelta(seconds=delay)


def _claim(*, grant_id: int, now: datetime) -> bool:
    """Claim the revocation for a while, so a duplicate task or the sweep does not run it in parallel.

    Duplicates would be harmless (revocation is idempotent at Cloudflare), just wasteful.
    """
    lease = now + timedelta(seconds=settings.GRANT_REFRESH_LEASE)
    return (
        Grant.objects.filter(pk=grant_id, status=Grant.Status.DISCONNECTING)
        .filter(Q(next_revoke_at__isnull=True) | Q(next_revoke_at__lte=now))
        .update(next_revoke_at=lease)
        == 1
    )


def grant_revoke_at_cloudflare(*, grant_id: int) -> RevokeResult:
    """Revoke a disconnecting grant's tokens at Cloudflare (refresh token first, then access token).

    Idempotent: a grant that is not `disconnecting` is left alone; a token already erased is skipped.
    """
    now = timezone.now()
    # Tokens are read separately, inside the error handling: a value no key can decrypt must
    # become a retry with a visible error, not a crashing task.
    grant = (
        Grant.objects.select_related("app", "client").defer("access_token", "refresh_token").filter(pk=grant_id).first()
    )
    if grant is None or grant.status != Grant.Status.DISCONNECTING:
        return RevokeResult(done=grant is not None and grant.status == Grant.Status.DISCONNECTED, skipped=True)
    if grant.refresh_lease_until and grant.refresh_lease_until > now:
        # A refresh that began before the disconnect is still in flight: revoking now could revoke a
        # token that is about to be replaced, leaving its successor alive. Wait for the lease.
        Grant.objects.filter(pk=grant.pk, status=Grant.Status.DISCONNECTING).update(
            next_revoke_at=grant.refresh_lease_until + timedelta(seconds=1)
        )
        return RevokeResult(done=False, retry_at=grant.refresh_lease_until, skipped=True)
    if not _claim(grant_id=grant.pk, now=now):
        return RevokeResult(done=False, skipped=True)
    generation = grant.refresh_generation

    try:
        refresh_token, access_token = (
            Grant.objects.filter(pk=grant.pk).values_list("refresh_token", "access_token").get()
        )
        for hint, token in (("refresh_token", refresh_token), ("access_token", access_token)):
            if not token:
                continue
            try:
                cloudflare.revoke(app=grant.app, token=token, token_type_hint=hint)
            except cloudflare.InvalidClient:
                raise
            except cloudflare.OAuthError as exc:
                # 400 unsupported_token_type / invalid token: Cloudflare will not (or need not)
                # revoke it; nothing more we can do for this token.
                logger.info("Revocation of grant %s %s answered %s: treated as done", grant.pk, hint, exc.error)
            fields = (
                {"refresh_token": "", "refresh_token_fp": ""}
                if hint == "refresh_token"
                else {"access_token": "", "access_token_fp": ""}
            )
            # Erase the revoked token now (fenced on the generation: a rotation would have moved on).
            Grant.objects.filter(pk=grant.pk, refresh_generation=generation).update(**fields)
    except (cloudflare.TransientError, cloudflare.InvalidClient, crypto.TokenDecryptionError) as exc:
        return _schedule_retry(grant=grant, exc=exc)

    with transaction.atomic():
        done = Grant.objects.filter(
            pk=grant.pk, status=Grant.Status.DISCONNECTING, refresh_generation=generation
        ).update(
            status=Grant.Status.DISCONNECTED,
            access_token="",
            refresh_token="",
            access_token_fp="",
            refresh_token_fp="",
            access_expires_at=None,
            ended_at=timezone.now(),
            status_changed_at=timezone.now(),
            next_revoke_at=None,
            refresh_lease_until=None,
        )
        if done != 1:
            # The row changed under us (a rotation landed): the next run revokes the new tokens.
            Grant.objects.filter(pk=grant.pk, status=Grant.Status.DISCONNECTING).update(next_revoke_at=timezone.now())
            return RevokeResult(done=False, retry_at=timezone.now())
        event_record(
            grant=grant,
            kind=GrantEvent.Kind.DISCONNECTED,
            actor_type=GrantEvent.Actor.CLOUDFLARE,
            message="Cloudflare confirmed the revocation; tokens erased",
            detail={"attempts": grant.revoke_attempts + 1, "reason": grant.end_reason},
        )
    return RevokeResult(done=True)


def _schedule_retry(*, grant: Grant, exc: Exception) -> RevokeResult:
    attempts = grant.revoke_attempts + 1
    retry_after = getattr(exc, "retry_after", None)
    retry_at = timezone.now() + revoke_backoff(attempts=attempts, retry_after=retry_after)
    with transaction.atomic():
        Grant.objects.filter(pk=grant.pk, status=Grant.Status.DISCONNECTING).update(
            revoke_attempts=attempts, next_revoke_at=retry_at, last_error=f"Revocation: {exc}"[:500]
        )
        event_record(
            grant=grant,
            kind=GrantEvent.Kind.REVOCATION_RETRY,
            actor_type=GrantEvent.Actor.SYSTEM,
            message=f"Cloudflare did not confirm the revocation ({type(exc).__name__}); retrying",
            detail={
                "attempt": attempts,
                "error": type(exc).__name__,
                "status": getattr(exc, "status", None),
                "retry_at": retry_at.isoformat(),
            },
        )
    logger.info("Revocation of grant %s not confirmed (%s); retry at %s", grant.pk, type(exc).__name__, retry_at)
    return RevokeResult(done=False, retry_at=retry_at)


def grants_revoke_due(*, now: datetime, limit: int = 500) -> QuerySet:
    """Ids of disconnecting grants whose next revocation attempt is due (index connections_grant_revoke_due)."""
    return (
        Grant.objects.filter(status=Grant.Status.DISCONNECTING, next_revoke_at__lte=now)
        .order_by("next_revoke_at")
        .values_list("pk", flat=True)[:limit]
    )


def revoke_pending_sweep(*, now: datetime | None = None) -> int:
    """Enqueue a revocation task for every due disconnecting grant; returns how many."""
    ids = list(grants_revoke_due(now=now or timezone.now()))
    for grant_id in ids:
        _enqueue_revoke(grant_id)
    return len(ids)
