"""The single path to Cloudflare's token endpoint for an existing grant.

Cloudflare refresh tokens are single-use and rotate on every refresh; presenting an old one can
revoke the whole grant. Two workers refreshing the same grant, or a blind retry after a timeout,
would kill a client's connection and raise a false "revoked" alarm. `grant_refresh` makes that
impossible:

1. **Claim** the grant with a compare-and-set UPDATE (`refresh_generation` unchanged and no live
   lease) that sets a lease longer than the worst HTTP time and the hard task time limit. Zero rows
   updated means another worker holds it: the outcome is *skipped*, never *failed*. A lease found
   expired (its holder was killed mid-call) marks the grant *uncertain* in the same UPDATE.
2. **Re-read** the row under the claim. Already fresh (someone refreshed it a moment ago) → release,
   no call.
3. **One token call**, outside any transaction, with the timeouts of `connections.cloudflare`.
4. **Fenced write**: the new access token, refresh token (the old one kept if the response has
   none) and expiry land in one UPDATE filtered on the generation and refresh-token fingerprint we
   read, which bumps the generation. Events and alerts go in the same transaction.

Classification of failures (security checklist OA-12, OA-15):

- `invalid_grant` (400 or 401) with the current token → *revoked* (the user or Cloudflare ended it),
  unless an earlier attempt's outcome is unknown (`refresh_uncertain_since`): then Cloudflare may have
  rotated the token without us hearing the answer, and the grant is *lost* (needs re-consent).
- `invalid_client` / `unauthorized_client` → one app-wide alert; no grant changes state; the app's
  refreshes are pushed back.
- Read timeout / connection reset after sending → *uncertain*: no retry now; the next attempt decides.
- 429 (Retry-After honoured), 5xx, connect errors, HTML instead of JSON, other OAuth errors →
  *transient*: exponential backoff with jitter; after `GRANT_FAILURE_THRESHOLD` consecutive failures
  the grant is *refresh failing* (one alert); the next success sends a *recovered* notice.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, wait
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from .. import cloudflare, crypto, ratelimit
from ..models import Alert, Grant, GrantEvent
from ..selectors import REFRESHABLE_STATUSES, grant_for_engine, grants_attach_apps
from .dispatch import grants_dispatch_due
from .events import alert_open, alerts_resolve, event_record
from .threads import ProcessThreads

logger = logging.getLogger(__name__)


class Outcome(StrEnum):
    REFRESHED = "refreshed"
    FRESH = "fresh"  # nothing to do: the access token is not due yet
    SKIPPED = "skipped"  # another worker holds the grant (contention is never a failure)
    DEFERRED = "deferred"  # the outbound rate budget is spent: rescheduled, nothing counted
    TRANSIENT = "transient"  # Cloudflare unavailable / rate limited / odd answer: backing off
    UNCERTAIN = "uncertain"  # the request was sent, no answer came: the next attempt decides
    REVOKED = "revoked"
    LOST = "lost"
    CLIENT_CONFIG = "client_config"  # the OAuth app's credentials were refused
    NOT_LIVE = "not_live"  # the grant is not active / refresh failing (or does not exist)
    NO_REFRESH_TOKEN = "no_refresh_token"
    CONFLICT = "conflict"  # the row moved under our lease (should never happen): nothing written
    AWAITING_EVIDENCE = "awaiting_evidence"  # an unanswered refresh may still run at Cloudflare: wait
    SPOOLED = "spooled"  # new tokens received, the database unreachable: kept in the spool


# --- Scheduling ------------------------------------------------------------------------------


def refresh_window(*, lifetime: float) -> tuple[float, float]:
    """(margin, jitter) in seconds for an access token that lives `lifetime` seconds.

    The margin is `GRANT_REFRESH_MARGIN` (900 s: room for retries before expiry) but never more than
    a quarter of the lifetime, and the jitter at most a tenth: with the 120 s tokens of the demo a
    fixed 900 s margin would make every token due before it was even issued (a refresh loop).
    """
    lifetime = max(float(lifetime), 1.0)
    margin = min(float(settings.GRANT_REFRESH_MARGIN), lifetime / 4)
    jitter = min(float(settings.GRANT_REFRESH_JITTER), lifetime / 10)
    return margin, jitter


def refresh_due_at(*, expires_at: datetime, lifetime: float) -> datetime:
    """When to refresh a token expiring at `expires_at`: margin before expiry, minus random jitter.

    The jitter spreads grants connected at the same moment (an import, a campaign) over time so
    their refreshes do not all land in the same minute.
    """
    margin, jitter = refresh_window(lifetime=lifetime)
    return expires_at - timedelta(seconds=margin + random.uniform(0, jitter))


def _lifetime(grant: Grant) -> float:
    issued = grant.last_refreshed_at or grant.authorized_at
    if grant.access_expires_at is None or issued is None or issued >= grant.access_expires_at:
        return 4.0 * settings.GRANT_REFRESH_MARGIN
    return (grant.access_expires_at - issued).total_seconds()


def _is_fresh(grant: Grant, now: datetime) -> bool:
    """True when the access token is not in its refresh window yet (largest margin + jitter)."""
    if grant.access_expires_at is None or not grant.access_token_fp:
        return False
    margin, jitter = refresh_window(lifetime=_lifetime(grant))
    return (grant.access_expires_at - now).total_seconds() > margin + jitter


def retry_delay(*, failures: int, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter after `failures` consecutive failures, at least Retry-After."""
    base = float(settings.GRANT_RETRY_BASE) * (2 ** max(0, failures - 1))
    delay = min(base, float(settings.GRANT_RETRY_MAX))
    # "Equal jitter": half fixed, half random, so a storm's retries spread out but never bunch at 0.
    delay = delay / 2 + random.uniform(0, delay / 2)
    return max(delay, float(retry_after or 0))


# --- The refresh -------------------------------------------------------------------------------


def grant_refresh(*, grant_id: int, force: bool = False) -> Outcome:
    """Refresh one grant if it is due (or `force`), single-flight. Returns what happened.

    `force` skips the freshness test (staff "refresh now", and the health check confirming a
    9109/10000 answer); it never skips the claim, nor the evidence an unanswered refresh needs.
    """
    # 0. Tokens received during a database outage go in first: without them the stored refresh
    # token is a rotated one, and presenting it would be a reuse.
    _spool_apply_quietly(grant_id)
    now = timezone.now()
    lease_until = now + timedelta(seconds=lease_seconds())

    # 1. Claim. Refresh tokens are single-use: a second caller would present a rotated token. The
    # generation is read after the claim: whoever changes the row from now on bumps it (the fence).
    claimed = _claim([grant_id], now=now, lease_until=lease_until)
    if claimed != 1:
        live = Grant.objects.filter(pk=grant_id, status__in=REFRESHABLE_STATUSES).exists()
        return _log(grant_id, Outcome.SKIPPED if live else Outcome.NOT_LIVE)

    grant = None
    try:
        # 2. Read under the claim, with the app: the row we act on is the row we own. Everything the
        # call needs is loaded here: a failure up to the call sent nothing, so it is never "uncertain".
        grant = grant_for_engine(grant_id=grant_id)
        if grant is None or grant.refresh_lease_until != lease_until:
            # Gone, or ended and re-claimed in between (cannot happen under our lease): nothing sent.
            return _log(grant_id, Outcome.NOT_LIVE if grant is None else Outcome.SKIPPED)
        seen_gen = grant.refresh_generation
        if _spool_pending(grant_id):
            # Tokens from an earlier holder appeared in the spool since we looked: the stored refresh
            # token is a rotated one. Stand back; the spool is applied once the claim ends.
            _release(grant, seen_gen, next_refresh_at=now + timedelta(seconds=1))
            return _log(grant_id, Outcome.DEFERRED)
        app = grant.app
        app.client_secret  # noqa: B018 - decrypted now, not inside the call
        if not force and grant.refresh_uncertain_since is None and _is_fresh(grant, now):
            _release(
                grant,
                seen_gen,
                next_refresh_at=refresh_due_at(expires_at=grant.access_expires_at, lifetime=_lifetime(grant)),
            )
            return _log(grant_id, Outcome.FRESH)
        if not grant.refresh_token:
            _release(grant, seen_gen, next_refresh_at=None, last_error="No refresh token: cannot refresh.")
            return _log(grant_id, Outcome.NO_REFRESH_TOKEN)
    except crypto.TokenDecryptionError:
        Grant.objects.filter(pk=grant_id, refresh_lease_until=lease_until).update(
            refresh_lease_until=None,
            next_refresh_at=now + timedelta(seconds=settings.GRANT_RETRY_MAX),
            last_error="Stored token cannot be decrypted with TOKEN_ENCRYPTION_KEYS.",
        )
        logger.error("grant refresh: grant=%s cannot decrypt its tokens (encryption keys changed?)", grant_id)
        return _log(grant_id, Outcome.TRANSIENT)
    except BaseException:
        Grant.objects.filter(pk=grant_id, refresh_lease_until=lease_until).update(refresh_lease_until=None)
        raise

    with LeaseHeartbeat(grant_id=grant_id, generation=seen_gen, until=lease_until) as lease:
        return _log(grant_id, _refresh_claimed(grant, app, seen_gen, now, lease))


def _claim_statement(grant_ids: list[int], *, now: datetime, lease_until: datetime) -> tuple[str, list]:
    """The compare-and-set claim of every refreshable, unleased grant of `grant_ids`: one UPDATE.

    It sets the lease, and makes the grant due again the moment the lease runs out: if this worker
    dies, the next sweep (a follow-up sweep at that moment) finds the grant without waiting for a
    retry interval. A lease still set here expired without being released: its holder died
    (SIGKILL, OOM, hard time limit), possibly after Cloudflare rotated the token, so the grant is
    marked uncertain (unknown outcome) in the same statement.
    """
    from django.db import connection

    ops = connection.ops
    column = {
        name: ops.quote_name(Grant._meta.get_field(name).column)
        for name in ("id", "refresh_lease_until", "next_refresh_at", "refresh_uncertain_since", "status")
    }
    lease, uncertain = column["refresh_lease_until"], column["refresh_uncertain_since"]
    until, at = ops.adapt_datetimefield_value(lease_until), ops.adapt_datetimefield_value(now)
    ids = ", ".join(["%s"] * len(grant_ids))
    statuses = ", ".join(["%s"] * len(REFRESHABLE_STATUSES))
    # Only the model's own table and column names and placeholders go into the text.
    sql = (
        f"UPDATE {ops.quote_name(Grant._meta.db_table)} SET {lease} = %s, {column['next_refresh_at']} = %s, "  # noqa: S608
        f"{uncertain} = CASE WHEN {lease} IS NOT NULL THEN COALESCE({uncertain}, %s) ELSE {uncertain} END "
        f"WHERE {column['id']} IN ({ids}) AND {column['status']} IN ({statuses}) "
        f"AND ({lease} IS NULL OR {lease} < %s)"
    )
    return sql, [until, until, at, *grant_ids, *REFRESHABLE_STATUSES, at]


def _claim(grant_ids: list[int], *, now: datetime, lease_until: datetime) -> int:
    """Claim the grants of `grant_ids` (`_claim_statement`); how many were claimed."""
    from django.db import connection

    sql, params = _claim_statement(grant_ids, now=now, lease_until=lease_until)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def grants_claimed_for_refresh(
    *, grant_ids: list[int], now: datetime, lease_until: datetime, apps: dict
) -> list[Grant]:
    """Claim the grants of `grant_ids` and read them, in one statement (`_claim_statement` as
    `UPDATE … RETURNING`): the claim and the rows it took arrive together, so no claim is taken
    whose rows were not read. With their OAuth apps (`grants_attach_apps`, the task's cache
    `apps`); the client is not loaded (only alerts and events need it). In grant id order."""
    from django.db import connection

    if not grant_ids:
        return []
    sql, params = _claim_statement(grant_ids, now=now, lease_until=lease_until)
    ops = connection.ops
    columns = ", ".join(ops.quote_name(field.column) for field in Grant._meta.concrete_fields)
    grants = sorted(Grant.objects.raw(f"{sql} RETURNING {columns}", params), key=lambda grant: grant.pk)
    grants_attach_apps(grants, apps)
    return grants


def call_budget() -> float:
    """The longest a token call can take: connect plus the token endpoint's own read timeout."""
    return float(settings.CLOUDFLARE_CONNECT_TIMEOUT) + float(settings.CLOUDFLARE_TOKEN_READ_TIMEOUT)


def lease_seconds() -> float:
    """The claim's length: never shorter than a whole token call plus the margin."""
    return max(float(settings.GRANT_REFRESH_LEASE), call_budget() + float(settings.GRANT_LEASE_MARGIN))


def _refresh_claimed(grant: Grant, app, seen_gen: int, now: datetime, lease: LeaseHeartbeat) -> Outcome:
    """Steps 3 and 4 for a grant we hold: evidence first if needed, then one call, then the write."""
    # The global outbound cap (Cloudflare counts requests per IP). Wait a little inside the lease,
    # else give the grant back and come again: the budget is not this grant's failure.
    if not ratelimit.wait_for_slot(user_key=None, max_wait=settings.CLOUDFLARE_RATELIMIT_MAX_WAIT):
        _release(grant, seen_gen, next_refresh_at=now + timedelta(seconds=5 + random.uniform(0, 10)))
        return Outcome.DEFERRED

    if grant.refresh_uncertain_since is not None:
        # An earlier refresh got no answer: find out what happened before anything is sent.
        decision = _resolve_uncertain(grant, seen_gen)
        if decision is not None:
            return decision

    # Never send unless the lease outlives the whole call: then no second holder can exist while the
    # token is in flight, whatever the pool and its time limits (the heartbeat is a bonus, not the
    # guarantee). The rate-limit wait or the evidence probe may have used some of it.
    if not lease.ensure(call_budget() + float(settings.GRANT_LEASE_MARGIN) / 2):
        try:
            _release(grant, seen_gen)
        except DatabaseError:
            _close_broken_connection()  # the lease runs out on its own; nothing was sent
        return Outcome.DEFERRED
    old_fp = grant.refresh_token_fp
    sent_at = timezone.now()
    # 3. One call, outside any transaction, no retry.
    try:
        token = cloudflare.refresh(app=app, refresh_token=grant.refresh_token)
    except (cloudflare.OAuthError, cloudflare.TransientError) as exc:
        return _on_call_error(grant, seen_gen, old_fp, exc)
    except BaseException:
        # Soft time limit, worker shutdown, a bug: the request may have reached Cloudflare.
        _mark_uncertain(grant, seen_gen, "Refresh interrupted; outcome unknown.")
        raise
    # 4. Store at once, fenced on what we read; never drop what Cloudflare gave us.
    return _on_success_durable(grant, seen_gen, old_fp, token, sent_at, lease)


def _on_call_error(grant: Grant, seen_gen: int, old_fp: str, exc: cloudflare.CloudflareError) -> Outcome:
    """Record what a token call's error means (see the module docstring's classification)."""
    if isinstance(exc, cloudflare.InvalidGrant):
        return _on_invalid_grant(grant, seen_gen, old_fp, exc)
    if isinstance(exc, cloudflare.InvalidClient):
        return _on_invalid_client(grant, seen_gen, exc)
    if isinstance(exc, cloudflare.UncertainOutcome):
        return _on_failure(grant, seen_gen, exc, uncertain=True)
    if isinstance(exc, cloudflare.RateLimited) and exc.retry_after:
        ratelimit.block(user_key=None, seconds=exc.retry_after)
    if isinstance(exc, (cloudflare.TransientError, cloudflare.OAuthError)):
        return _on_failure(grant, seen_gen, exc, retry_after=exc.retry_after)
    # Any other Cloudflare error after sending: the request may have taken effect.
    _mark_uncertain(grant, seen_gen, f"Refresh failed oddly ({type(exc).__name__}); outcome unknown.")
    return Outcome.UNCERTAIN


# --- Many grants in one task ---------------------------------------------------------------------


def grants_refresh(*, grant_ids: list[int]) -> dict[int, Outcome]:
    """Refresh many due grants in one task; the same rules as `grant_refresh`, grant by grant.

    A rolling window: at most `GRANT_REFRESH_BATCH` token calls are in flight; as calls finish,
    the next grants of the message are claimed (the same compare-and-set UPDATE, one statement
    for all the free places, then one SELECT of the claimed rows with their apps) and sent, so the
    process never waits for a batch's slowest call with nothing else in flight. The calls run on a
    per-process pool of threads (each keeps its HTTP connection; the TLS context is the
    process's); this thread writes each answer as it arrives, fenced by generation and refresh
    token exactly like a single refresh (a failed write: the same retries, then the spool). The
    pool threads never touch the database: one heartbeat thread extends the leases of the grants
    still held, in one UPDATE, and a call is sent only while its lease outlives the whole call.

    A grant is claimed just before its call, so each lease starts with its call. After
    `_claim_period()` seconds the task claims nothing more: the grants it has not reached are made
    due at once for the next sweep (a task of rate-limited calls still ends well inside the soft
    time limit). A grant whose earlier refresh went unanswered needs evidence first: it is handed
    to its own `refresh_grant_task`, as are none of the others.
    """
    ids = sorted(set(grant_ids))
    if not ids:
        return {}
    for grant_id in _spool_pending_ids(ids):
        _spool_apply_quietly(grant_id)
    window = max(1, int(settings.GRANT_REFRESH_BATCH))
    todo = deque(ids)
    outcomes: dict[int, Outcome] = {}
    handed: list[int] = []
    claiming_until = time.monotonic() + _claim_period()
    apps: dict = {}  # the OAuth apps of this task's grants, read once
    # A quarter more claimed than sent: they wait on the pool's queue and go out the moment a call
    # ends, while this thread claims the next ones and writes the answers. Claims and writes go a
    # few grants at a time (`group`): one statement and one commit for several.
    target = window + window // 4
    group = max(2, window // 4)
    lease = BatchLease()
    try:
        with lease:
            calls = _Calls(lease, outcomes)

            def refill() -> None:
                """Claim grants of the message until the window (and its queue) is full again."""
                nonlocal claiming_until
                # Claim a group at once while the queue still feeds every thread; at once if a
                # thread has nothing to send.
                if target - calls.in_flight < min(group, len(todo)) and calls.in_flight >= window:
                    return
                while todo and calls.in_flight < target and time.monotonic() < claiming_until:
                    chunk = [todo.popleft() for _ in range(min(target - calls.in_flight, len(todo)))]
                    try:
                        calls.start(_claim_ready(chunk, lease, outcomes, handed, apps))
                    except DatabaseError as exc:
                        # The calls in flight are still written (or spooled); nothing more is claimed.
                        logger.warning("grant refresh: no more grants claimed (%s)", type(exc).__name__)
                        _close_broken_connection()
                        todo.extendleft(reversed(chunk))
                        claiming_until = 0.0

            try:
                refill()
                answers: list[tuple[Grant, _Sent]] = []
                first_at = 0.0
                while calls.in_flight or answers:
                    if calls.in_flight:
                        linger = None if not answers else max(0.0, first_at + _WRITE_LINGER - time.monotonic())
                        arrived = calls.collect(timeout=linger)
                        if arrived and not answers:
                            first_at = time.monotonic()
                        answers += arrived
                        refill()  # the next claims before this thread writes the answers
                    if answers and (
                        len(answers) >= group or not calls.in_flight or time.monotonic() >= first_at + _WRITE_LINGER
                    ):
                        calls.record(answers)
                        answers = []
            except BaseException:
                calls.abandon()
                raise
    finally:
        for unheard_ids, until in lease.unheard:
            _release_lease(unheard_ids, until)
        if handed:
            from ..tasks import refresh_grant_task
            from .dispatch import enqueue_each

            enqueue_each(refresh_grant_task, handed)
        if todo:
            _hand_back(list(todo))
    for grant_id in handed:
        outcomes[grant_id] = _log(grant_id, Outcome.AWAITING_EVIDENCE)
    return outcomes


# The longest an answer in hand waits for others to share its write (its lease is held meanwhile).
_WRITE_LINGER = 0.02


def _claim_period() -> float:
    """How long a task keeps claiming the grants of its message: until the sweep would hand them
    out again (`GRANT_DISPATCH_RETRY`), and never past a quarter of the soft time limit, so the
    calls claimed last (a rate-limit wait, a whole call, the write retries) still end in time."""
    soft = float(settings.CELERY_TASK_SOFT_TIME_LIMIT)
    return max(1.0, min(float(settings.GRANT_DISPATCH_RETRY), soft / 4))


def _hand_back(grant_ids: list[int]) -> None:
    """Grants of the message this task did not reach: due now, for the next sweep. Never raises.

    Only those still as the sweep left them (due by its re-dispatch mark, not held): a grant that
    someone refreshed meanwhile keeps its own due time."""
    now = timezone.now()
    try:
        Grant.objects.filter(
            pk__in=grant_ids,
            status__in=REFRESHABLE_STATUSES,
            refresh_lease_until__isnull=True,
            next_refresh_at__lte=now + timedelta(seconds=settings.GRANT_DISPATCH_RETRY),
        ).update(next_refresh_at=now)
    except DatabaseError:
        _close_broken_connection()  # they become due at the sweep's re-dispatch mark anyway


def _release_lease(grant_ids: list[int], lease_until: datetime) -> None:
    """Give back leases this task may hold without knowing it (a claim whose answer was lost), by
    their exact value: nobody else's lease matches it. Nothing was sent for them: due now. Never
    raises."""
    try:
        Grant.objects.filter(pk__in=grant_ids, refresh_lease_until=lease_until).update(
            refresh_lease_until=None, next_refresh_at=timezone.now()
        )
    except DatabaseError:
        _close_broken_connection()  # they run out on their own; the next claim treats them as unknown


def _claim_ready(
    ids: list[int], lease: BatchLease, outcomes: dict[int, Outcome], handed: list[int], apps: dict
) -> list[Grant]:
    """Claim `ids` and read the rows taken (one statement; their apps from the task's `apps`, read
    once), and run the checks of a single refresh up to the call. Returns the grants to send now,
    their leases held by `lease`."""
    now = timezone.now()
    lease_until = now + timedelta(seconds=lease_seconds())
    try:
        grants = grants_claimed_for_refresh(grant_ids=ids, now=now, lease_until=lease_until, apps=apps)
        others = set(ids) - {grant.pk for grant in grants}
        if others:
            live = set(
                Grant.objects.filter(pk__in=others, status__in=REFRESHABLE_STATUSES).values_list("pk", flat=True)
            )
            for grant_id in sorted(others):
                outcomes[grant_id] = _log(grant_id, Outcome.SKIPPED if grant_id in live else Outcome.NOT_LIVE)
        spooled = _spool_pending_ids(ids) if grants else set()
        ready: list[Grant] = []
        for grant in grants:
            outcome = _before_call(grant, now, spooled)
            if outcome is None:
                ready.append(grant)
            elif outcome == Outcome.AWAITING_EVIDENCE:
                handed.append(grant.pk)
            else:
                outcomes[grant.pk] = _log(grant.pk, outcome)
    except BaseException:
        # Nothing of this claim was sent, and it may have committed without this process hearing
        # it (or its rows were read and the rest failed): its leases are given back at the end of
        # the task, by their exact value, if the database is back by then (`_release_lease`), so
        # these grants are not mistaken for a dead holder's.
        lease.unheard.append((ids, lease_until))
        raise
    lease.add({g.pk: g.refresh_generation for g in ready}, until=lease_until)
    return ready


def _before_call(grant: Grant, now: datetime, spooled: set[int]) -> Outcome | None:
    """The checks of a single refresh up to the call, for a claimed grant. None: send it.

    AWAITING_EVIDENCE: an unanswered refresh comes first; released for its own task.
    """
    seen_gen = grant.refresh_generation
    try:
        if grant.pk in spooled:
            _release(grant, seen_gen, next_refresh_at=now + timedelta(seconds=1))
            return Outcome.DEFERRED
        grant.app.client_secret  # noqa: B018 - decrypted now, not inside the call
        if grant.refresh_uncertain_since is not None:
            # Found again by the sweep after GRANT_DISPATCH_RETRY if the message is lost.
            _release(grant, seen_gen, next_refresh_at=now + timedelta(seconds=settings.GRANT_DISPATCH_RETRY))
            return Outcome.AWAITING_EVIDENCE
        if _is_fresh(grant, now):
            _release(
                grant,
                seen_gen,
                next_refresh_at=refresh_due_at(expires_at=grant.access_expires_at, lifetime=_lifetime(grant)),
            )
            return Outcome.FRESH
        if not grant.refresh_token:
            _release(grant, seen_gen, next_refresh_at=None, last_error="No refresh token: cannot refresh.")
            return Outcome.NO_REFRESH_TOKEN
    except crypto.TokenDecryptionError:
        _release(
            grant,
            seen_gen,
            next_refresh_at=now + timedelta(seconds=settings.GRANT_RETRY_MAX),
            last_error="Stored token cannot be decrypted with TOKEN_ENCRYPTION_KEYS.",
        )
        logger.error("grant refresh: grant=%s cannot decrypt its tokens (encryption keys changed?)", grant.pk)
        return Outcome.TRANSIENT
    return None


@dataclass
class _Sent:
    """What a pool thread brings back: a token, an error after sending, or why nothing was sent."""

    sent_at: datetime | None = None
    token: cloudflare.TokenResponse | None = None
    error: BaseException | None = None
    held_back: str = ""  # "rate" (outbound budget spent) or "lease" (too little of it left)


def _send(grant: Grant, lease: _HeldLease) -> _Sent:
    """In a pool thread: the outbound budget, the lease check, then the one call. No database."""
    if not ratelimit.wait_for_slot(user_key=None, max_wait=settings.CLOUDFLARE_RATELIMIT_MAX_WAIT):
        return _Sent(held_back="rate")
    if not lease.ensure(call_budget() + float(settings.GRANT_LEASE_MARGIN) / 2):
        return _Sent(held_back="lease")
    sent_at = timezone.now()
    try:
        return _Sent(sent_at=sent_at, token=cloudflare.refresh(app=grant.app, refresh_token=grant.refresh_token))
    except BaseException as exc:  # noqa: BLE001 - classified by the task's thread
        return _Sent(sent_at=sent_at, error=exc)


def _tokens_write_together(tokens: list[tuple[Grant, _Sent]]) -> dict[int, Outcome]:
    """The fenced writes of several answers in one transaction; {} when it failed (none written).

    On PostgreSQL the routine ones (no event or alert to write) are one UPDATE … FROM (VALUES …),
    each row fenced on its own generation and refresh-token fingerprint exactly as `_on_success`.
    """
    from django.db import connection

    routine: list[tuple[Grant, _Sent]] = []
    if connection.vendor == "postgresql":
        routine = [(grant, sent) for grant, sent in tokens if not _success_side_effects(grant, sent.token)]
    in_one = {grant.pk for grant, _ in routine}
    others = [(grant, sent) for grant, sent in tokens if grant.pk not in in_one]
    try:
        # Routine answers alone are one statement: no transaction around it.
        with transaction.atomic() if others else nullcontext():
            outcomes = _routine_successes_write(routine) if routine else {}
            for grant, sent in others:
                outcomes[grant.pk] = _on_success(
                    grant, grant.refresh_generation, grant.refresh_token_fp, sent.token, sent.sent_at
                )
            return outcomes
    except DatabaseError:
        _close_broken_connection()
        return {}


def _success_side_effects(grant: Grant, token: cloudflare.TokenResponse) -> bool:
    """Does writing this answer also write events or alerts (see `_on_success`)?"""
    return bool(
        grant.status == Grant.Status.REFRESH_FAILING
        or _scopes_changed(grant, token)
        or grant.consecutive_failures
        or getattr(grant, "app_config_alert_open", True)
    )


def _scopes_changed(grant: Grant, token: cloudflare.TokenResponse) -> bool:
    return bool(token.scopes) and set(token.scopes) != set(grant.granted_scopes)


_ROUTINE_COLUMNS = (
    "access_token",
    "access_token_fp",
    "refresh_token",
    "refresh_token_fp",
    "access_expires_at",
    "last_refreshed_at",
    "next_refresh_at",
    "refresh_history",
)
_ROUTINE_CASTS = {
    "access_expires_at": "timestamptz",
    "last_refreshed_at": "timestamptz",
    "next_refresh_at": "timestamptz",
    "refresh_history": "jsonb",
}


def _routine_successes_write(tokens: list[tuple[Grant, _Sent]]) -> dict[int, Outcome]:
    """Routine answers in one UPDATE (PostgreSQL), with the values `_on_success` would write."""
    from django.db import connection

    now = timezone.now()
    table = connection.ops.quote_name(Grant._meta.db_table)
    fields = {name: Grant._meta.get_field(name) for name in _ROUTINE_COLUMNS}
    casts = _ROUTINE_CASTS
    rows, params = [], []
    for grant, sent in tokens:
        values = _success_values(grant, sent.token, sent.sent_at, now)
        row = [grant.pk, grant.refresh_generation, grant.refresh_token_fp]
        row += [fields[name].get_db_prep_save(values[name], connection) for name in _ROUTINE_COLUMNS]
        params += row
        placeholders = ["%s::bigint", "%s::bigint", "%s"] + [
            f"%s::{casts[name]}" if name in casts else "%s" for name in _ROUTINE_COLUMNS
        ]
        rows.append("(" + ", ".join(placeholders) + ")")
    column = {name: connection.ops.quote_name(fields[name].column) for name in _ROUTINE_COLUMNS}
    sets = ", ".join(f"{column[name]} = v.{name}" for name in _ROUTINE_COLUMNS)
    statuses = ", ".join(["%s"] * len(REFRESHABLE_STATUSES))
    # Only the model's own table and column names and placeholders go into the text; every value
    # is a parameter.
    sql = (
        f"UPDATE {table} AS g SET {sets}, refresh_lease_until = NULL, refresh_uncertain_since = NULL, "  # noqa: S608
        "refresh_failing_since = NULL, consecutive_failures = 0, last_error = '', "
        "refresh_generation = g.refresh_generation + 1, refresh_count = g.refresh_count + 1 "
        f"FROM (VALUES {', '.join(rows)}) AS v(id, seen_generation, old_refresh_fp, {', '.join(_ROUTINE_COLUMNS)}) "
        "WHERE g.id = v.id AND g.refresh_generation = v.seen_generation AND g.refresh_token_fp = v.old_refresh_fp "
        f"AND g.status IN ({statuses}) RETURNING g.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *REFRESHABLE_STATUSES])
        written = {row[0] for row in cursor.fetchall()}
    outcomes = {}
    for grant, _ in tokens:
        if grant.pk not in written:
            logger.error("grant refresh: grant=%s row changed under the lease; new tokens discarded", grant.pk)
        outcomes[grant.pk] = Outcome.REFRESHED if grant.pk in written else Outcome.CONFLICT
    return outcomes


def _settle(grant: Grant, sent: _Sent, lease: _HeldLease, budget: dict) -> Outcome:
    """In the task's thread: record one call's result, as a single refresh does."""
    seen_gen, old_fp = grant.refresh_generation, grant.refresh_token_fp
    if sent.held_back == "rate":
        _release(grant, seen_gen, next_refresh_at=timezone.now() + timedelta(seconds=5 + random.uniform(0, 10)))
        return Outcome.DEFERRED
    if sent.held_back:
        _release(grant, seen_gen)
        return Outcome.DEFERRED
    if sent.error is None:
        return _on_success_durable(grant, seen_gen, old_fp, sent.token, sent.sent_at, lease, budget=budget)
    if isinstance(sent.error, (cloudflare.OAuthError, cloudflare.TransientError)):
        return _on_call_error(grant, seen_gen, old_fp, sent.error)
    logger.error("grant refresh: grant=%s call failed", grant.pk, exc_info=sent.error)
    _mark_uncertain(grant, seen_gen, "Refresh interrupted; outcome unknown.")
    return Outcome.UNCERTAIN


class _Calls:
    """The token calls of a task in flight on the pool, and the answers written as they arrive.

    The new tokens of the answers that arrived together go in one transaction (one commit for
    several fenced UPDATEs); if it fails, each is written on its own with the retries and the
    spool of a single refresh (one write-retry window for the whole task, not one per grant).
    """

    def __init__(self, lease: BatchLease, outcomes: dict[int, Outcome]) -> None:
        self.lease = lease
        self.outcomes = outcomes
        self.futures: dict = {}  # future → grant, while its answer is not recorded
        self.waiting: set = set()
        self.unrecorded: dict[int, tuple[Grant, _Sent]] = {}  # answers in hand, not yet recorded
        self.budget: dict = {}

    @property
    def in_flight(self) -> int:
        """Calls submitted and not answered: sent, or queued for the next free pool thread."""
        return len(self.waiting)

    def start(self, grants: list[Grant]) -> None:
        pool = _call_threads.get()
        for grant in grants:
            future = pool.submit(_send, grant, self.lease.held(grant.pk))
            self.futures[future] = grant
            self.waiting.add(future)

    def collect(self, *, timeout: float | None = None) -> list[tuple[Grant, _Sent]]:
        """Wait for an answer (at most `timeout` seconds); the answers in hand, in grant order, not
        yet recorded."""
        done, _ = wait(self.waiting, timeout=timeout, return_when=FIRST_COMPLETED)
        arrived = sorted(((self.futures[f], f.result()) for f in done), key=lambda pair: pair[0].pk)
        # In hand from here on: a stop now spools them (`abandon`) instead of waiting for them.
        self.unrecorded.update({grant.pk: (grant, sent) for grant, sent in arrived})
        self.waiting -= done
        for future in done:
            del self.futures[future]
        return arrived

    def record(self, arrived: list[tuple[Grant, _Sent]]) -> None:
        """Write what the answers mean, as a single refresh does (new tokens fenced, else the spool)."""
        tokens = [(grant, sent) for grant, sent in arrived if sent.token is not None and not sent.held_back]
        written = _tokens_write_together(tokens) if tokens else {}
        for grant, sent in arrived:
            try:
                outcome = written.get(grant.pk) or _settle(grant, sent, self.lease.held(grant.pk), self.budget)
            except DatabaseError:
                # Like a single refresh whose failure could not be recorded: the lease runs out and
                # the next attempt treats the outcome as unknown.
                logger.warning("grant refresh: grant=%s outcome not recorded (database unavailable)", grant.pk)
                _close_broken_connection()
                continue
            finally:
                self.unrecorded.pop(grant.pk, None)
                self.lease.drop(grant.pk)
            self.outcomes[grant.pk] = _log(grant.pk, outcome)
            if outcome == Outcome.REFRESHED and grant.app_config_alert_open:
                grant.app.config_alert_open = False  # closed by this success: not again for the next

    def abandon(self) -> None:
        """The task is being stopped (soft time limit, shutdown) with calls not yet recorded.

        New tokens in hand go to the spool (never dropped); a call that was not sent gives its
        claim back; an error's meaning is left to the next attempt. A call not started is
        cancelled and its claim given back. A call that may have been sent is marked uncertain,
        and any tokens it brings back go to the spool.
        """
        lease = self.lease
        for grant, sent in self.unrecorded.values():
            held = lease.held(grant.pk)
            if sent.token is not None:
                _spool(grant, grant.refresh_generation, grant.refresh_token_fp, sent.token, sent.sent_at, held)
            elif sent.held_back:
                _release_quietly([grant])
        for future in self.waiting:
            grant = self.futures[future]
            held = lease.held(grant.pk)
            if future.cancel():
                _release_quietly([grant])
                continue

            def keep(done, grant=grant, held=held) -> None:
                sent = done.result()
                if sent.token is not None:
                    _spool(grant, grant.refresh_generation, grant.refresh_token_fp, sent.token, sent.sent_at, held)

            if future.done() and future.result().held_back:
                _release_quietly([grant])
                continue
            future.add_done_callback(keep)
            try:
                _mark_uncertain(grant, grant.refresh_generation, "Refresh interrupted; outcome unknown.")
            except DatabaseError:
                _close_broken_connection()


def _release_quietly(grants: list[Grant]) -> None:
    for grant in grants:
        try:
            _release(grant, grant.refresh_generation)
        except DatabaseError:
            _close_broken_connection()  # the lease runs out on its own; nothing was sent
            return


# This process's token-call threads: exactly `GRANT_REFRESH_BATCH` of them, so no more calls than
# that are ever in flight (the grants claimed beyond it wait on the queue).
_call_threads = ProcessThreads(setting="GRANT_REFRESH_BATCH", name="token-call", exact=True)


class BatchLease:
    """The leases of a task's grants in flight, extended together by one heartbeat thread.

    Like `LeaseHeartbeat`: every third of the lease, one UPDATE pushes the lease of every grant
    still held (fenced by its generation) one lease length ahead. A pool thread whose lease is too
    short to send asks the heartbeat for an extension now and waits for it; the pool threads never
    open a database connection.
    """

    def __init__(self) -> None:
        self.generations: dict[int, int] = {}  # grant id → generation, while held (`add`)
        self.untils: dict[int, datetime] = {}  # the lease's end as last written by us
        self._lock = threading.Lock()
        self._rounds = threading.Condition()
        self._round = 0
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.unheard: list[tuple[list[int], datetime]] = []  # claims whose answer never arrived

    def __enter__(self) -> BatchLease:
        self._thread = threading.Thread(target=self._run, name="batch-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def held(self, grant_id: int) -> _HeldLease:
        return _HeldLease(self, grant_id)

    def add(self, grants: dict[int, int], *, until: datetime) -> None:
        """Hold the leases of grants just claimed (grant id → generation), ending at `until`."""
        with self._lock:
            self.untils.update(dict.fromkeys(grants, until))
            self.generations.update(grants)

    def drop(self, grant_id: int) -> None:
        """Stop extending this grant's lease (waits for an extension under way to finish)."""
        with self._lock:
            self.generations.pop(grant_id, None)

    def left(self, grant_id: int) -> float:
        return (self.untils[grant_id] - timezone.now()).total_seconds()

    def extend(self) -> None:
        """Push every held lease one lease length from now, if still ours. Never raises."""
        with self._lock:
            if not self.generations:
                return
            now = timezone.now()
            until = now + timedelta(seconds=lease_seconds())
            try:
                match = Q()
                for grant_id, generation in self.generations.items():
                    match |= Q(pk=grant_id, refresh_generation=generation)
                extended = Grant.objects.filter(match, refresh_lease_until__gte=now).update(
                    refresh_lease_until=until, next_refresh_at=until
                )
                if extended == len(self.generations):
                    for grant_id in self.generations:
                        self.untils[grant_id] = max(self.untils[grant_id], until)
                    return
                # Some lease was not ours any more (a grant just settled): one by one, to know which.
                for grant_id, generation in self.generations.items():
                    if Grant.objects.filter(
                        pk=grant_id, refresh_generation=generation, refresh_lease_until__gte=now
                    ).update(refresh_lease_until=until, next_refresh_at=until):
                        self.untils[grant_id] = max(self.untils[grant_id], until)
            except DatabaseError as exc:
                logger.warning("grant refresh: batch leases not extended (%s)", type(exc).__name__)
                _close_broken_connection()

    def ensure(self, grant_id: int, seconds: float) -> bool:
        """True when this grant's lease has at least `seconds` left (asking for an extension now)."""
        if self.left(grant_id) >= seconds:
            return True
        with self._rounds:
            seen = self._round
            self._kick.set()
            self._rounds.wait_for(lambda: self._round > seen or self._stop.is_set(), timeout=10)
        return self.left(grant_id) >= seconds

    def _run(self) -> None:
        from django.db import connection

        interval = max(0.5, lease_seconds() / 3)
        try:
            while not self._stop.is_set():
                self._kick.wait(interval)
                self._kick.clear()
                if self._stop.is_set():
                    break
                self.extend()
                with self._rounds:
                    self._round += 1
                    self._rounds.notify_all()
        finally:
            with self._rounds:
                self._round += 1
                self._rounds.notify_all()
            connection.close()


class _HeldLease:
    """One grant's view of a BatchLease, shaped like LeaseHeartbeat for the shared write path."""

    def __init__(self, batch: BatchLease, grant_id: int) -> None:
        self.batch = batch
        self.grant_id = grant_id

    @property
    def until(self) -> datetime:
        return self.batch.untils[self.grant_id]

    def ensure(self, seconds: float) -> bool:
        return self.batch.ensure(self.grant_id, seconds)

    def stop(self) -> None:
        self.batch.drop(self.grant_id)


def _spool_pending_ids(grant_ids: list[int]) -> set[int]:
    from .token_spool import spool_pending_ids

    try:
        return spool_pending_ids() & set(grant_ids)
    except Exception:  # noqa: BLE001 - unreadable spool: refreshes go on, the sweep retries it
        logger.warning("grant refresh: token spool not readable", exc_info=True)
        return set()


# --- An unanswered refresh: evidence before anything is sent again ------------------------------


class Evidence(StrEnum):
    NOT_ROTATED = "not_rotated"  # the old access token still works: the refresh did not take effect
    ROTATED = "rotated"  # the old access token is refused: the refresh took effect unheard
    NONE = "none"  # nothing can tell (old access token expired, or the server keeps it alive)


def uncertain_evidence(grant: Grant) -> Evidence:
    """Ask Cloudflare, with the old access token, whether the unanswered refresh took effect.

    Cloudflare's OAuth server (Hydra) revokes the previous access token when a refresh succeeds,
    so the old token's answer tells the two cases apart, as long as it has not expired on its own
    and the server does revoke it (`CLOUDFLARE_REFRESH_REVOKES_OLD_ACCESS`). Raises a
    cloudflare.TransientError when the probe cannot be made now.
    """
    if not settings.CLOUDFLARE_REFRESH_REVOKES_OLD_ACCESS or not grant.access_token:
        return Evidence.NONE
    # An access token refused because it expired says nothing about the refresh.
    if grant.access_expires_at is None or grant.access_expires_at <= timezone.now() + timedelta(seconds=5):
        return Evidence.NONE
    accepted = cloudflare.access_token_accepted(access_token=grant.access_token)
    if accepted is None:
        return Evidence.NONE
    if not accepted and grant.access_expires_at <= timezone.now():
        return Evidence.NONE
    return Evidence.NOT_ROTATED if accepted else Evidence.ROTATED


def _within_grace(grant: Grant, now: datetime) -> bool:
    """True when a rotated refresh token would still be accepted (the server's grace period).

    The unanswered request was sent at most one lease plus the longest call before it was found
    unanswered; its rotation (if any) happened after it was sent.
    """
    grace = float(settings.CLOUDFLARE_REFRESH_GRACE_SECONDS)
    if grace <= 0:
        return False
    oldest = (
        grant.refresh_uncertain_since
        - timedelta(seconds=settings.GRANT_REFRESH_LEASE)
        - timedelta(seconds=settings.CLOUDFLARE_CONNECT_TIMEOUT + settings.CLOUDFLARE_TOKEN_READ_TIMEOUT)
    )
    return (now - oldest).total_seconds() < grace - 5


def _resolve_uncertain(grant: Grant, seen_gen: int) -> Outcome | None:
    """None when a refresh may be sent now; else the outcome of waiting or deciding without a call."""
    now = timezone.now()
    settle_at = grant.refresh_uncertain_since + timedelta(seconds=settings.GRANT_UNCERTAIN_SETTLE)
    if now < settle_at:
        # The first request may still be running at Cloudflare. A probe now could see the old
        # access token alive a moment before the refresh revokes it; a re-send within a grace
        # period could rotate first and have the late first request rotate again behind it, leaving
        # us with a token that is no longer the newest. Both wait until it has certainly finished.
        _release(grant, seen_gen, next_refresh_at=settle_at + timedelta(seconds=random.uniform(0, 2)))
        return Outcome.AWAITING_EVIDENCE
    if _within_grace(grant, now):
        return None  # whatever happened, the server accepts this refresh token once more
    try:
        evidence = uncertain_evidence(grant)
    except cloudflare.TransientError as exc:
        return _on_failure(grant, seen_gen, exc, retry_after=exc.retry_after)
    logger.info("grant refresh: grant=%s evidence=%s", grant.pk, evidence.value)
    if evidence == Evidence.NOT_ROTATED:
        # Nothing took effect: the stored refresh token is the current one. An invalid_grant from
        # now on is a real revocation.
        Grant.objects.filter(pk=grant.pk, refresh_generation=seen_gen).update(refresh_uncertain_since=None)
        grant.refresh_uncertain_since = None
        return None
    if evidence == Evidence.NONE and settings.GRANT_UNCERTAIN_POLICY == "resend":
        return None  # the operator's choice: a reuse (and the loss) if the first request arrived
    if evidence == Evidence.ROTATED:
        reason = "The refresh took effect at Cloudflare but its answer never arrived (the old access token is refused)."
    else:
        reason = "A refresh got no answer and nothing can tell whether it took effect; it is not sent again."
    return _mark_lost(grant, seen_gen, grant.refresh_token_fp, reason, detail={"evidence": evidence.value})


class LeaseHeartbeat:
    """Extends the grant's lease every third of `GRANT_REFRESH_LEASE` while the holder works.

    The lease can then be short: a dead holder's grant is free again within one lease, while a
    slow call or a database retry never loses its claim. The thread has its own database
    connection (closed at the end); a failed extension is only logged (the fences still hold).
    """

    def __init__(self, *, grant_id: int, generation: int, until: datetime | None = None) -> None:
        self.grant_id = grant_id
        self.generation = generation
        self.until = until or timezone.now()  # the lease's end as last written by us
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LeaseHeartbeat:
        self._thread = threading.Thread(target=self._run, name=f"lease-{self.grant_id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def extend(self) -> bool:
        """Push the lease's end one lease length from now, if it is still ours. Never raises."""
        now = timezone.now()
        until = now + timedelta(seconds=lease_seconds())
        try:
            extended = Grant.objects.filter(
                pk=self.grant_id, refresh_generation=self.generation, refresh_lease_until__gte=now
            ).update(refresh_lease_until=until, next_refresh_at=until)
        except DatabaseError as exc:
            logger.warning("grant refresh: grant=%s lease not extended (%s)", self.grant_id, type(exc).__name__)
            _close_broken_connection()
            return False
        if extended:
            self.until = max(self.until, until)
        return bool(extended)

    def ensure(self, seconds: float) -> bool:
        """True when the lease has at least `seconds` left (extending it now if needed)."""
        if (self.until - timezone.now()).total_seconds() >= seconds:
            return True
        return self.extend() and (self.until - timezone.now()).total_seconds() >= seconds

    def _run(self) -> None:
        from django.db import connection

        interval = max(0.5, lease_seconds() / 3)
        try:
            while not self._stop.wait(interval):
                self.extend()
        finally:
            connection.close()


def _close_broken_connection() -> None:
    from django.db import connection

    if not connection.in_atomic_block:
        try:
            connection.close()
        except Exception:  # noqa: BLE001, S110 - it is broken already; the next query reconnects
            pass


def _spool_pending(grant_id: int) -> bool:
    from .token_spool import spool_pending

    try:
        return spool_pending(grant_id=grant_id)
    except Exception:  # noqa: BLE001 - unreadable spool: the pre-claim apply already logged it
        return False


def _spool_apply_quietly(grant_id: int) -> None:
    from .token_spool import spool_apply

    try:
        spool_apply(grant_id=grant_id)
    except Exception:  # noqa: BLE001 - the spool is applied again by the sweep and at worker start
        logger.warning("grant refresh: grant=%s spool not applied", grant_id, exc_info=True)


# Outcomes that count for the dashboard's refresh success rate (others did not try a refresh).
_COUNTED_OK = {Outcome.REFRESHED, Outcome.SPOOLED}
_COUNTED_FAILED = {Outcome.TRANSIENT, Outcome.UNCERTAIN, Outcome.LOST, Outcome.CLIENT_CONFIG}
# A revocation is the client's (or Cloudflare's) decision, not a refresh failure: counted apart.
_COUNTED_ENDED = {Outcome.REVOKED}


def _log(grant_id: int, outcome: Outcome) -> Outcome:
    # One INFO line per outcome (grant id and outcome only, never a token).
    logger.info("grant refresh: grant=%s outcome=%s", grant_id, outcome.value)
    if outcome in _COUNTED_OK or outcome in _COUNTED_FAILED or outcome in _COUNTED_ENDED:
        from agencyportal.models import DailyFleetStats

        DailyFleetStats.count_refresh(ok=outcome in _COUNTED_OK, ended=outcome in _COUNTED_ENDED, batched=True)
        if outcome != Outcome.REFRESHED:  # a success records its history in the fenced write itself
            _history_record(grant_id, outcome)
    return outcome


REFRESH_HISTORY_LENGTH = 10


def _history_record(grant_id: int, outcome: Outcome) -> None:
    """Add one attempt to the grant's own history (totals + the last few). Never raises.

    A read then a write: safe because refreshes of one grant are single-flight (the lease)."""
    try:
        history = Grant.objects.filter(pk=grant_id).values_list("refresh_history", flat=True).first()
        if history is None:
            return
        entry = {"at": timezone.now().isoformat(timespec="seconds"), "outcome": outcome.value}
        counter = "refresh_count" if outcome in _COUNTED_OK else "refresh_failure_count"
        Grant.objects.filter(pk=grant_id).update(
            refresh_history=[entry, *history][:REFRESH_HISTORY_LENGTH], **{counter: F(counter) + 1}
        )
    except Exception:  # noqa: BLE001 - history must never break a refresh
        logger.warning("grant refresh: history not recorded for grant=%s", grant_id, exc_info=True)


def _release(grant: Grant, seen_gen: int, **fields) -> None:
    """Give the claim back (and set any scheduling fields) if we still own the generation."""
    Grant.objects.filter(pk=grant.pk, refresh_generation=seen_gen).update(refresh_lease_until=None, **fields)


def _mark_uncertain(grant: Grant, seen_gen: int, error: str) -> None:
    now = timezone.now()
    Grant.objects.filter(pk=grant.pk, refresh_generation=seen_gen).update(
        refresh_lease_until=None,
        refresh_uncertain_since=Coalesce(F("refresh_uncertain_since"), Value(now)),
        next_refresh_at=now + timedelta(seconds=settings.GRANT_UNCERTAIN_RETRY),
        last_error=error[:500],
    )


def _on_success_durable(
    grant: Grant,
    seen_gen: int,
    old_fp: str,
    token: cloudflare.TokenResponse,
    sent_at: datetime,
    lease: LeaseHeartbeat | _HeldLease | None = None,
    *,
    budget: dict | None = None,
) -> Outcome:
    """Write the new tokens; retry while the database is unreachable; spool them if it stays so.

    The old refresh token has rotated at Cloudflare: dropping the answer would lose the grant.
    The lease is extended meanwhile (LeaseHeartbeat), so nobody else claims the grant. `budget`
    shares one retry window between the writes of a batch (its deadline set at the first failure).
    """
    budget = {} if budget is None else budget
    delay = 0.25
    try:
        while True:
            try:
                return _on_success(grant, seen_gen, old_fp, token, sent_at)
            except DatabaseError as exc:
                _close_broken_connection()
                deadline = budget.setdefault("deadline", time.monotonic() + settings.GRANT_WRITE_RETRY_SECONDS)
                if time.monotonic() + delay > deadline:
                    logger.warning(
                        "grant refresh: grant=%s database unavailable for the write (%s)", grant.pk, type(exc).__name__
                    )
                    break
                time.sleep(delay)
                delay = min(delay * 2, 4.0)
    except BaseException:
        # A soft time limit or shutdown while retrying: the tokens still must not be lost.
        _spool(grant, seen_gen, old_fp, token, sent_at, lease)
        raise
    _spool(grant, seen_gen, old_fp, token, sent_at, lease)
    return Outcome.SPOOLED


def _spool(
    grant: Grant,
    seen_gen: int,
    old_fp: str,
    token: cloudflare.TokenResponse,
    sent_at: datetime,
    lease: LeaseHeartbeat | _HeldLease | None = None,
) -> None:
    from .token_spool import SpooledTokens, spool_put

    if lease is not None:
        lease.stop()  # the lease ends where the record says: nobody extends it past that

    spool_put(
        SpooledTokens(
            grant_id=grant.pk,
            seen_generation=seen_gen,
            old_refresh_fp=old_fp,
            access_token=token.access_token,
            refresh_token=token.refresh_token or grant.refresh_token,
            expires_in=token.expires_in,
            scopes=list(token.scopes),
            sent_at=sent_at.isoformat(),
            lease_until=lease.until.isoformat() if lease is not None else "",
        )
    )


def _success_values(grant: Grant, token: cloudflare.TokenResponse, sent_at: datetime, now: datetime) -> dict:
    """The new tokens, their expiry, the next due time and the history entry of a success."""
    # Expiry counted from when we *sent* the request: never later than Cloudflare's own clock.
    expires_at = sent_at + timedelta(seconds=token.expires_in)
    # A response without refresh_token keeps the old one (non-rotating servers, OA-11).
    new_refresh = token.refresh_token or grant.refresh_token
    entry = {"at": now.isoformat(timespec="seconds"), "outcome": Outcome.REFRESHED.value}
    return {
        "access_token": token.access_token,
        "access_token_fp": crypto.fingerprint(token.access_token),
        "refresh_token": new_refresh,
        "refresh_token_fp": crypto.fingerprint(new_refresh),
        "access_expires_at": expires_at,
        "last_refreshed_at": now,
        "next_refresh_at": refresh_due_at(expires_at=expires_at, lifetime=token.expires_in),
        "refresh_history": [entry, *(grant.refresh_history or [])][:REFRESH_HISTORY_LENGTH],
    }


def _on_success(
    grant: Grant, seen_gen: int, old_fp: str, token: cloudflare.TokenResponse, sent_at: datetime
) -> Outcome:
    now = timezone.now()
    scopes_changed = _scopes_changed(grant, token)
    # Read under our lease: only a lease holder changes these (the fence below proves it).
    was_failing = grant.status == Grant.Status.REFRESH_FAILING
    config_alert_open = getattr(grant, "app_config_alert_open", True)
    updates: dict = {
        **_success_values(grant, token, sent_at, now),
        "refresh_lease_until": None,
        "refresh_uncertain_since": None,
        "refresh_failing_since": None,
        "consecutive_failures": 0,
        "last_error": "",
        "refresh_generation": F("refresh_generation") + 1,
        "refresh_count": F("refresh_count") + 1,
    }
    if was_failing:
        updates.update(status=Grant.Status.ACTIVE, status_changed_at=now)
    if scopes_changed:
        updates["granted_scopes"] = token.scopes
    fence = Grant.objects.filter(
        pk=grant.pk, refresh_generation=seen_gen, refresh_token_fp=old_fp, status__in=REFRESHABLE_STATUSES
    )
    # A routine refresh is this one UPDATE (its own transaction); events and alerts only go with it
    # in one transaction when there are any.
    side_effects = was_failing or scopes_changed or grant.consecutive_failures or config_alert_open
    with transaction.atomic() if side_effects else nullcontext():
        if not fence.update(**updates):
            # Only possible if someone wrote the row without holding the lease, or the grant ended
            # meanwhile. Our tokens are the newest at Cloudflare, but writing over an unknown change
            # is worse: say it loudly.
            logger.error("grant refresh: grant=%s row changed under the lease; new tokens discarded", grant.pk)
            return Outcome.CONFLICT
        if scopes_changed:
            event_record(
                grant=grant,
                kind=GrantEvent.Kind.SCOPES_CHANGED,
                actor_type=GrantEvent.Actor.CLOUDFLARE,
                message="Cloudflare returned a different set of granted scopes on refresh.",
                detail={
                    "added": sorted(set(token.scopes) - set(grant.granted_scopes)),
                    "removed": sorted(set(grant.granted_scopes) - set(token.scopes)),
                },
            )
        if was_failing:
            # A "recovered" notice only where staff heard of the failure: a per-grant alert that was
            # held (an incident covered it, or the grant recovered within the hold) was never sent.
            heard = Alert.objects.filter(
                grant=grant, kind=Alert.Kind.REFRESH_FAILING, resolved_at__isnull=True, delivered_at__isnull=False
            ).exists()
            alerts_resolve(grant=grant, kinds=[Alert.Kind.REFRESH_FAILING])
            event_record(grant=grant, kind=GrantEvent.Kind.RECOVERED, message="Token refresh works again.")
            if heard:
                alert_open(
                    kind=Alert.Kind.RECOVERED,
                    grant=grant,
                    message=f"{_who(grant)}: token refresh works again after {grant.consecutive_failures} failures.",
                )
        if grant.consecutive_failures:
            from .alerts import incident_recovered_if_over

            incident_recovered_if_over(app=grant.app, now=now)
        if config_alert_open:
            # The app's credentials evidently work: close the app-wide configuration alarm.
            Alert.objects.filter(
                app_id=grant.app_id, grant__isnull=True, kind=Alert.Kind.CLIENT_CONFIG, resolved_at__isnull=True
            ).update(resolved_at=now)
    return Outcome.REFRESHED


def _on_invalid_grant(grant: Grant, seen_gen: int, old_fp: str, exc: cloudflare.InvalidGrant) -> Outcome:
    return _end_grant(grant, seen_gen, old_fp, error=str(exc), detail={"error": exc.error, "http_status": exc.status})


def _mark_lost(grant: Grant, seen_gen: int, old_fp: str, reason: str, *, detail: dict) -> Outcome:
    """The grant is lost without another call: the refresh token is rotated (or may be)."""
    return _end_grant(grant, seen_gen, old_fp, error=reason, detail=detail, lost_reason=reason)


def _end_grant(
    grant: Grant, seen_gen: int, old_fp: str, *, error: str, detail: dict, lost_reason: str | None = None
) -> Outcome:
    """Revoked (invalid_grant for a token we know is current) or lost (after an unanswered refresh)."""
    now = timezone.now()
    with transaction.atomic():
        fence = Grant.objects.filter(pk=grant.pk, refresh_generation=seen_gen, refresh_token_fp=old_fp)
        row = fence.select_for_update().values("status", "refresh_uncertain_since").first()
        if row is None or row["status"] not in REFRESHABLE_STATUSES:
            # The row moved on (a disconnect started): this answer says nothing about its token.
            Grant.objects.filter(pk=grant.pk, refresh_generation=seen_gen).update(refresh_lease_until=None)
            return Outcome.SKIPPED
        lost = lost_reason is not None or row["refresh_uncertain_since"] is not None
        status = Grant.Status.LOST if lost else Grant.Status.REVOKED
        fence.update(
            status=status,
            end_reason=Grant.EndReason.REFRESH_TOKEN_LOST if lost else Grant.EndReason.USER_REVOKED,
            status_changed_at=now,
            ended_at=now,
            access_token="",
            access_token_fp="",
            refresh_token="",
            refresh_token_fp="",
            health=Grant.Health.FAILING,
            next_refresh_at=None,
            next_check_at=None,
            refresh_lease_until=None,
            last_error=error[:500],
            refresh_generation=F("refresh_generation") + 1,
        )
        if lost:
            if row["refresh_uncertain_since"] is not None:
                detail["uncertain_since"] = row["refresh_uncertain_since"].isoformat()
            event_record(
                grant=grant,
                kind=GrantEvent.Kind.LOST,
                message=lost_reason
                or "An earlier refresh got no answer and Cloudflare now refuses the stored refresh "
                "token: the portal lost the current token. The client must consent again.",
                detail=detail,
            )
            alert_open(
                kind=Alert.Kind.LOST,
                grant=grant,
                message=f"{_who(grant)}: grant lost by the portal after an unanswered refresh; needs re-consent.",
            )
        else:
            event_record(
                grant=grant,
                kind=GrantEvent.Kind.REVOKED,
                actor_type=GrantEvent.Actor.CLOUDFLARE,
                message="Cloudflare refused the current refresh token: the grant was revoked.",
                detail=detail,
            )
            alert_open(kind=Alert.Kind.REVOKED, grant=grant, message=f"{_who(grant)}: grant revoked at Cloudflare.")
        # The ongoing problems end with the grant.
        alerts_resolve(
            grant=grant, kinds=[Alert.Kind.REFRESH_FAILING, Alert.Kind.HEALTH_FAILING, Alert.Kind.SCOPE_MISSING]
        )
    return Outcome.LOST if lost else Outcome.REVOKED


def _on_invalid_client(grant: Grant, seen_gen: int, exc: cloudflare.InvalidClient) -> Outcome:
    now = timezone.now()
    pause = timedelta(seconds=settings.GRANT_CLIENT_CONFIG_BACKOFF)
    app = grant.app
    with transaction.atomic():
        Grant.objects.filter(pk=grant.pk, refresh_generation=seen_gen).update(
            refresh_lease_until=None, next_refresh_at=now + pause, last_error=str(exc)[:500]
        )
        alert = alert_open(
            kind=Alert.Kind.CLIENT_CONFIG,
            app=app,
            message=f"Cloudflare refused the credentials of OAuth app “{app.name}” ({exc.error}). "
            "Check the client ID and secret; no grant was changed.",
        )
        if alert is not None:
            event_record(
                grant=grant,
                kind=GrantEvent.Kind.CLIENT_CONFIG_ERROR,
                message="Cloudflare refused the OAuth app's credentials on refresh.",
                detail={"error": exc.error, "http_status": exc.status, "app_id": app.pk},
            )
    if alert is not None:
        # Every grant of this app would get the same answer: push them back too, so a broken
        # secret costs one token call per pause, not one per grant. No grant changes state.
        # Only the worker that opened the alert does this, in its own statement after commit:
        # two workers updating the same set of rows inside their transactions deadlock.
        Grant.objects.filter(app=app, status__in=REFRESHABLE_STATUSES, next_refresh_at__lt=now + pause).update(
            next_refresh_at=now + pause
        )
    return Outcome.CLIENT_CONFIG


def _on_failure(
    grant: Grant,
    seen_gen: int,
    exc: cloudflare.CloudflareError,
    *,
    uncertain: bool = False,
    retry_after: float | None = None,
) -> Outcome:
    now = timezone.now()
    failures = grant.consecutive_failures + 1
    if uncertain:
        # Ask again soon with the same token: only Cloudflare's next answer can tell whether the
        # token rotated. Waiting longer would not make that answer any clearer.
        delay = settings.GRANT_UNCERTAIN_RETRY * random.uniform(1.0, 1.5)
    else:
        delay = retry_delay(failures=failures, retry_after=retry_after)
    with transaction.atomic():
        fence = Grant.objects.filter(pk=grant.pk, refresh_generation=seen_gen)
        row = fence.select_for_update().values("status", "refresh_uncertain_since").first()
        if row is None:
            return Outcome.CONFLICT
        updates: dict = {
            "refresh_lease_until": None,
            "consecutive_failures": F("consecutive_failures") + 1,
            "next_refresh_at": now + timedelta(seconds=delay),
            "last_error": str(exc)[:500],
        }
        if uncertain:
            updates["refresh_uncertain_since"] = Coalesce(F("refresh_uncertain_since"), Value(now))
        if failures == 1:
            updates["refresh_failing_since"] = now
        becomes_failing = row["status"] == Grant.Status.ACTIVE and failures >= settings.GRANT_FAILURE_THRESHOLD
        if becomes_failing:
            updates.update(status=Grant.Status.REFRESH_FAILING, status_changed_at=now)
        fence.update(**updates)
        # Events only at the edges of a failure streak: at scale a Cloudflare outage would
        # otherwise write one row per grant per retry. The row itself holds the latest error.
        if uncertain and row["refresh_uncertain_since"] is None:
            event_record(
                grant=grant,
                kind=GrantEvent.Kind.REFRESH_UNCERTAIN,
                actor_type=GrantEvent.Actor.CLOUDFLARE,
                message="A refresh request got no answer; it is not retried blindly. The next attempt decides.",
                detail={"error": str(exc)[:200]},
            )
        elif failures == 1:
            event_record(
                grant=grant,
                kind=GrantEvent.Kind.REFRESH_FAILED,
                actor_type=GrantEvent.Actor.CLOUDFLARE,
                message="Token refresh failed; retrying with backoff.",
                detail={"error": str(exc)[:200], "http_status": exc.status, "retry_in_s": round(delay)},
            )
        if becomes_failing:
            event_record(
                grant=grant,
                kind=GrantEvent.Kind.REFRESH_FAILING,
                actor_type=GrantEvent.Actor.CLOUDFLARE,
                message=f"Token refresh failed {failures} times in a row.",
                detail={"error": str(exc)[:200], "http_status": exc.status, "failures": failures},
            )
        # Many grants of one app failing together is one outage: one incident alert for it; the
        # per-grant alert is held (and dropped at delivery if an incident covers it by then).
        from .alerts import incident_note

        incident = incident_note(app=grant.app, now=now, error=str(exc)) if failures == 1 or becomes_failing else None
        if becomes_failing and incident is None:
            alert_open(
                kind=Alert.Kind.REFRESH_FAILING,
                grant=grant,
                message=f"{_who(grant)}: token refresh failed {failures} times in a row ({str(exc)[:120]}).",
                deliver_at=now + timedelta(seconds=settings.GRANT_INCIDENT_HOLD),
            )
    return Outcome.UNCERTAIN if uncertain else Outcome.TRANSIENT


def _who(grant: Grant) -> str:
    return f"{grant.client.name} / {grant.cf_user_email or grant.cf_user_id}"


# --- The sweep ---------------------------------------------------------------------------------


def refresh_followup_in(*, now: datetime | None = None) -> float | None:
    """Seconds until a follow-up sweep must run, or None when the next beat sweep is soon enough.

    Beat finds due work every `GRANT_SWEEP_INTERVAL` seconds; a token living less than about two
    intervals (60-second tokens) would expire waiting for it. So each sweep looks at the earliest
    refresh due *before* the next beat sweep and asks for one more sweep at that moment (at least
    `GRANT_SWEEP_FOLLOWUP_MIN` seconds away, so a dense minute costs a bounded number of sweeps).
    """
    now = now or timezone.now()
    interval = timedelta(seconds=settings.GRANT_SWEEP_INTERVAL)
    earliest = (
        Grant.objects.filter(
            status__in=REFRESHABLE_STATUSES, next_refresh_at__gt=now, next_refresh_at__lt=now + interval
        )
        .order_by("next_refresh_at")
        .values_list("next_refresh_at", flat=True)
        .first()
    )
    if earliest is None:
        return None
    return max(float(settings.GRANT_SWEEP_FOLLOWUP_MIN), (earliest - now).total_seconds())


def refresh_per_message() -> int:
    """Grants per `refresh_grants_task` message: `GRANT_REFRESH_PER_MESSAGE`, or by default 16
    times `GRANT_REFRESH_BATCH` (the calls a process keeps in flight). A task's window refills from
    its own message; only its last calls end with nothing queued behind them, so the longer the
    message the less of its time that tail is (about half a call in sixteen here)."""
    return max(1, int(settings.GRANT_REFRESH_PER_MESSAGE) or 16 * int(settings.GRANT_REFRESH_BATCH))


def grants_dispatch_due_refreshes(
    *, now: datetime | None = None, batch_size: int | None = None, max_batches: int | None = None
) -> int:
    """Run by beat every minute: enqueue the grants whose refresh is due, `refresh_per_message()`
    per `refresh_grants_task` message (one `refresh_grant_task` per grant when `GRANT_REFRESH_BATCH`
    is 1).

    Tokens spooled during a database outage are written first (fenced), so no due grant is sent
    with a rotated refresh token.
    """
    from ..selectors import grants_due_for_refresh
    from ..tasks import refresh_grant_task
    from .token_spool import spool_apply

    try:
        spool_apply()
    except Exception:  # noqa: BLE001 - the next sweep tries again
        logger.warning("refresh sweep: token spool not applied", exc_info=True)

    from ..tasks import refresh_grants_task

    batched = int(settings.GRANT_REFRESH_BATCH) > 1
    return grants_dispatch_due(
        due=lambda now: grants_due_for_refresh(now=now),
        due_field="next_refresh_at",
        task=refresh_grants_task if batched else refresh_grant_task,
        per_message=refresh_per_message() if batched else 1,
        spread=(int(settings.GRANT_REFRESH_SPREAD), int(settings.GRANT_REFRESH_BATCH)),
        label="refresh",
        now=now,
        batch_size=batch_size,
        max_batches=max_batches,
    )
