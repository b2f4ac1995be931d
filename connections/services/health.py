"""Scheduled health checks: is each live grant still usable, and what does it reach?

One check of one grant:

1. Make sure the access token is usable (refresh through the single refresh path if it is due).
2. `GET /accounts` (a cheap probe). A 9109 / 10000 answer does **not** prove revocation (both codes
   also mean "missing permission"): it is confirmed through `grant_refresh(force=True)`. If Cloudflare
   then answers `invalid_grant`, the refresh path marks the grant revoked (or lost) and alerts; if the
   refresh works and the probe still fails, the grant lacks a permission (scope missing, degraded).
3. Sync the accounts it reaches (new / gone) and, per account, its zones (new / gone / changed);
   a zone listing refused for one account while the token works elsewhere means that account's
   admin switched off OAuth app access.
4. Compare the granted scopes with what the agency needs.
5. Record the result on the row (health, last_checked_at, next_check_at); write events and alerts
   only for *changes*.

Outbound calls go through the shared budget in `connections.ratelimit` (per Cloudflare user, and
global); a 429's Retry-After blocks that user until then. A budget free again within
`CLOUDFLARE_RATELIMIT_MAX_WAIT` is waited for; beyond that the check is deferred, not failed.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from clients.models import CloudflareAccount, Zone

from .. import cloudflare, ratelimit
from ..models import LIVE_STATUSES, Alert, Grant, GrantEvent
from ..selectors import CHECKABLE_STATUSES, grant_for_engine, grants_due_for_check, grants_for_check
from .dispatch import grants_dispatch_due
from .events import alert_open, alerts_resolve, event_record
from .refresh import Outcome as RefreshOutcome
from .refresh import grant_refresh, retry_delay
from .threads import ProcessThreads

logger = logging.getLogger(__name__)

# A token this close to expiry is refreshed before the probe (seconds).
MIN_TOKEN_LIFE = 30
# Two checks of one grant closer than this are duplicates (a lost-and-found message): skip.
DUPLICATE_WINDOW = timedelta(seconds=30)
MAX_LISTED = 20  # names listed in an event's detail; the counts are always complete


class CheckOutcome(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"  # works, but a scope is missing or an account refuses OAuth apps
    REVOKED = "revoked"  # confirmed through the refresh path (which wrote the transition)
    LOST = "lost"
    DEFERRED = "deferred"  # out of budget / rate limited / token busy: rescheduled
    TRANSIENT = "transient"  # Cloudflare unavailable: rescheduled with backoff, nothing concluded
    SKIPPED = "skipped"  # checked moments ago
    NOT_LIVE = "not_live"


class _Deferred(Exception):
    def __init__(self, wait: float) -> None:
        super().__init__(f"deferred {wait:.0f}s")
        self.wait = wait


def _next_check(now: datetime) -> datetime:
    interval = float(settings.GRANT_CHECK_INTERVAL)
    return now + timedelta(seconds=interval * random.uniform(0.9, 1.1))


def grant_check(
    *, grant_id: int, force: bool = False, grant: Grant | None = None, reach: Reach | None = None
) -> CheckOutcome:
    """Check one grant (steps in the module docstring). `grant`: the row as `grant_for_engine(...,
    for_check=True)` gives it, and `reach`: what it reached, both read with the rest of a batch."""
    if grant is None:
        grant = grant_for_engine(grant_id=grant_id, for_check=True)
    if grant is None or grant.status not in CHECKABLE_STATUSES:
        return _log(grant_id, CheckOutcome.NOT_LIVE)
    now = timezone.now()
    if not force and grant.last_checked_at and now - grant.last_checked_at < DUPLICATE_WINDOW:
        return _log(grant_id, CheckOutcome.SKIPPED)
    try:
        outcome = _check(grant, now, reach)
    except _Deferred as exc:
        Grant.objects.filter(pk=grant_id).update(
            next_check_at=now + timedelta(seconds=exc.wait + random.uniform(1, 10))
        )
        outcome = CheckOutcome.DEFERRED
    except cloudflare.RateLimited as exc:
        wait = exc.retry_after or 60.0
        ratelimit.block(user_key=grant.cf_user_id, seconds=wait)
        Grant.objects.filter(pk=grant_id).update(
            next_check_at=now + timedelta(seconds=wait + random.uniform(1, 10)), last_error=f"check: {exc}"[:500]
        )
        outcome = CheckOutcome.DEFERRED
    except (cloudflare.TransientError, cloudflare.ApiError) as exc:
        # An outage (or an unexpected API error) proves nothing about the grant: record and retry.
        Grant.objects.filter(pk=grant_id).update(
            last_checked_at=now,
            next_check_at=now + timedelta(seconds=retry_delay(failures=2, retry_after=exc.retry_after)),
            last_error=f"check: {exc}"[:500],
        )
        outcome = CheckOutcome.TRANSIENT
    return _log(grant_id, outcome)


def grants_check(*, grant_ids: list[int]) -> dict[int, CheckOutcome]:
    """Check many grants in one task, all at once: each `grant_check` runs in a thread of this
    process's check pool, which keeps its database connection and HTTP session across tasks (as a
    worker process does), so a batch lasts about one check. `GRANT_CHECK_BATCH` of 1: in line."""
    from django.db import connection

    ids = sorted(set(grant_ids))
    if len(ids) <= 1 or connection.vendor == "sqlite":
        # SQLite takes one writer at a time: there the checks run one after another.
        return {grant_id: grant_check(grant_id=grant_id) for grant_id in ids}
    grants = grants_for_check(grant_ids=ids)  # one read for the batch, each check gets its row
    reach = Reach.read(list(grants.values()))  # and what they reach: three more, for the batch
    outcomes: dict[int, CheckOutcome] = {}
    for grant_id in ids:
        if grant_id not in grants:
            outcomes[grant_id] = _log(grant_id, CheckOutcome.NOT_LIVE)
    futures = {
        _check_threads.get().submit(_check_in_thread, grants[grant_id], reach): grant_id
        for grant_id in ids
        if grant_id in grants
    }
    try:
        for future in as_completed(futures):
            try:
                outcomes[futures[future]] = future.result()
            except Exception:  # noqa: BLE001 - one grant's bug must not stop the others' checks
                logger.exception("grant check: grant=%s failed", futures[future])
    finally:
        _routine_results_write(reach.routine)
    return outcomes


def _routine_results_write(results: list[tuple[int, datetime, datetime]]) -> None:
    """The routine results of a batch in one UPDATE … FROM (VALUES …) (PostgreSQL; the batch runs
    in line elsewhere). Unwritten (database gone), the grants are checked again when the sweep's
    re-dispatch mark comes: nothing is lost but a check."""
    from django.db import DatabaseError, connection

    if not results:
        return
    table = connection.ops.quote_name(Grant._meta.db_table)
    rows = ", ".join(["(%s::bigint, %s::timestamptz, %s::timestamptz)"] * len(results))
    statuses = ", ".join(["%s"] * len(CHECKABLE_STATUSES))
    # Only the model's own table name and placeholders go into the text; every value is a parameter.
    sql = (
        f"UPDATE {table} AS g SET health = %s, last_checked_at = v.checked_at, next_check_at = v.next_at, "  # noqa: S608
        f"last_error = '' FROM (VALUES {rows}) AS v(id, checked_at, next_at) "
        f"WHERE g.id = v.id AND g.status IN ({statuses})"
    )
    params = [Grant.Health.HEALTHY.value, *(value for row in results for value in row), *CHECKABLE_STATUSES]
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
    except DatabaseError:
        logger.warning("grant check: %s routine result(s) not written (database unavailable)", len(results))


def _check_in_thread(grant: Grant, reach: Reach) -> CheckOutcome:
    from django.db import close_old_connections

    # What the worker does around every task: drop a broken or too old connection, keep a healthy one.
    close_old_connections()
    try:
        return grant_check(grant_id=grant.pk, grant=grant, reach=reach)
    finally:
        close_old_connections()


# This process's check threads (each keeps its database connection and HTTP session).
_check_threads = ProcessThreads(setting="GRANT_CHECK_BATCH", name="grant-check", exact=False)


def _log(grant_id: int, outcome: CheckOutcome) -> CheckOutcome:
    logger.info("grant check: grant=%s outcome=%s", grant_id, outcome.value)
    return outcome


def _usable_token(grant: Grant, now: datetime, *, force_refresh: bool = False) -> tuple[Grant, RefreshOutcome | None]:
    """The grant with an access token good for the next minute, refreshing it if needed."""
    expiring = grant.access_expires_at is None or (grant.access_expires_at - now).total_seconds() < MIN_TOKEN_LIFE
    if not (force_refresh or expiring or not grant.access_token_fp):
        return grant, None
    outcome = grant_refresh(grant_id=grant.pk, force=force_refresh)
    return grant_for_engine(grant_id=grant.pk, for_check=True), outcome


def _check(grant: Grant, now: datetime, reach: Reach | None = None) -> CheckOutcome:
    grant, refresh_outcome = _usable_token(grant, now)
    if grant.status in (Grant.Status.REVOKED, Grant.Status.LOST):
        return CheckOutcome.REVOKED if grant.status == Grant.Status.REVOKED else CheckOutcome.LOST
    if grant.status not in CHECKABLE_STATUSES:
        return CheckOutcome.NOT_LIVE
    if not grant.access_token or grant.access_expires_at is None or grant.access_expires_at <= now:
        # The refresh did not get through (busy, backing off): come back after it.
        raise _Deferred(wait=float(settings.GRANT_UNCERTAIN_RETRY))

    # 2. The probe, with a confirmation of any authentication error through the refresh path.
    try:
        accounts = _api_list(grant, "/accounts")
    except cloudflare.ApiError as exc:
        if not exc.is_auth_error:
            raise
        outcome = grant_refresh(grant_id=grant.pk, force=True)
        if outcome == RefreshOutcome.REVOKED:
            return CheckOutcome.REVOKED
        if outcome == RefreshOutcome.LOST:
            return CheckOutcome.LOST
        if outcome != RefreshOutcome.REFRESHED:
            # Busy or Cloudflare unavailable: no conclusion today.
            raise _Deferred(wait=float(settings.GRANT_UNCERTAIN_RETRY)) from exc
        grant = grant_for_engine(grant_id=grant.pk, for_check=True)
        try:
            accounts = _api_list(grant, "/accounts")
        except cloudflare.ApiError as again:
            if not again.is_auth_error:
                raise
            # A fresh token still refused: not revoked, a permission is missing.
            return _record(
                grant,
                now,
                reach=reach,
                issues=[
                    ("scope", "Cloudflare refuses GET /accounts with a fresh token: a required permission is missing.")
                ],
            )

    issues: list[tuple[str, str]] = []
    # 3. What the grant reaches.
    live_accounts = _sync_accounts(grant, accounts, now, reach)
    # Cloudflare may say per account whether OAuth app access is on (`settings.oauth_app_access`). When an
    # account admin switches it off, existing grants keep working but a re-consent would no longer
    # reach the account: staff must know before they send a consent link.
    flags = {str(a.get("id")): _oauth_app_access(a) for a in accounts}
    # The known zones of every account in one read (read with the batch's: copies of its own).
    known_zones: dict[int, dict[str, Zone]] = {account.pk: {} for account in live_accounts}
    if reach is not None:
        for account in live_accounts:
            known_zones[account.pk] = {
                cf_id: copy.copy(zone) for cf_id, zone in reach.zones.get(account.pk, {}).items()
            }
    else:
        for zone in Zone.objects.filter(account__in=live_accounts) if live_accounts else []:
            known_zones[zone.account_id][zone.cf_zone_id] = zone
    for account in live_accounts:
        switched_off = flags.get(account.cf_account_id) is False
        try:
            zones = _api_list(grant, "/zones", params={"account.id": account.cf_account_id})
        except cloudflare.ApiError as exc:
            if "zone.read" not in grant.granted_scopes:
                issues.append(("scope", "The grant cannot read zones (zone.read missing)."))
                continue
            # The token works (GET /accounts just answered) and has zone.read, yet this account
            # refuses: its admin switched off OAuth app access.
            _mark_oauth_access(grant, account, enabled=False, now=now, error=exc)
            issues.append(("oauth", f"Account “{account.name}” refuses OAuth apps (its admin switched access off)."))
            continue
        _sync_zones(grant, account, zones, now, existing=known_zones[account.pk])
        if switched_off:
            _mark_oauth_access(grant, account, enabled=False, now=now)
            issues.append(("oauth", f"An admin of account “{account.name}” switched off OAuth app access."))
        elif account.oauth_access_enabled is not True:
            _mark_oauth_access(grant, account, enabled=True, now=now)

    # 4. Scope coverage against the agency's declared needs.
    missing = grant.missing_required_scopes
    if missing:
        issues.append(("scope", f"Required permission(s) missing: {', '.join(missing)}."))
    return _record(grant, now, issues=issues, reach=reach)


def _oauth_app_access(account: dict) -> bool | None:
    """The account's OAuth-app switch when Cloudflare reports it (top level or under `settings`)."""
    settings_ = account.get("settings") if isinstance(account.get("settings"), dict) else {}
    value = account.get("oauth_app_access", settings_.get("oauth_app_access"))
    return value if isinstance(value, bool) else None


def _api_list(grant: Grant, path: str, *, params: dict[str, Any] | None = None) -> list[dict]:
    """Every page of a list endpoint, each page counted against the user's and the global budget.

    A budget free again within `CLOUDFLARE_RATELIMIT_MAX_WAIT` (the global per-second cap) is
    waited for, so checks run at the cap instead of being put off with calls already spent; a
    longer wait (the user's budget spent, a 429's block) defers the check."""
    items: list[dict] = []
    page = 1
    while True:
        deadline = time.monotonic() + float(settings.CLOUDFLARE_RATELIMIT_MAX_WAIT)
        while (wait := ratelimit.acquire(user_key=grant.cf_user_id)) > 0:
            if time.monotonic() + wait > deadline:
                raise _Deferred(wait)
            time.sleep(min(wait, 1.0))
        envelope = cloudflare.api_request(
            "GET", path, access_token=grant.access_token, params={**(params or {}), "page": page, "per_page": 50}
        )
        result = envelope.get("result") or []
        if not isinstance(result, list):
            raise cloudflare.BadResponse(f"API GET {path}: result is not a list")
        items.extend(r for r in result if isinstance(r, dict))
        info = envelope.get("result_info") or {}
        total_pages = info.get("total_pages")
        if not result or not isinstance(total_pages, int) or page >= total_pages or page >= 200:
            return items
        page += 1


@dataclass
class Reach:
    """What the grants of a batch reached when it started, read in three queries for all of them:
    the accounts of their clients and those they are linked to, each grant's links, and the zones
    of those accounts. Each check works on copies of the rows it needs (checks of grants of one
    client run side by side)."""

    accounts: dict[int, CloudflareAccount]
    links: dict[int, set[int]]  # grant id → linked account ids
    zones: dict[int, dict[str, Zone]]  # account id → {Cloudflare zone id: zone}
    # Routine results (healthy, nothing else to write): (grant id, checked at, next check at).
    routine: list[tuple[int, datetime, datetime]] = field(default_factory=list)

    @classmethod
    def read(cls, grants: list[Grant]) -> Reach:
        through = Grant.accounts.through
        links: dict[int, set[int]] = {grant.pk: set() for grant in grants}
        for grant_id, account_id in through.objects.filter(grant_id__in=links).values_list(
            "grant_id", "cloudflareaccount_id"
        ):
            links[grant_id].add(account_id)
        linked = set().union(*links.values()) if links else set()
        clients = {grant.client_id for grant in grants}
        accounts = {
            account.pk: account
            for account in CloudflareAccount.objects.filter(Q(client_id__in=clients) | Q(pk__in=linked))
        }
        zones: dict[int, dict[str, Zone]] = {pk: {} for pk in accounts}
        for zone in Zone.objects.filter(account_id__in=accounts) if accounts else []:
            zones[zone.account_id][zone.cf_zone_id] = zone
        return cls(accounts=accounts, links=links, zones=zones)

    def accounts_of(self, grant: Grant, reported: dict[str, str]) -> list[CloudflareAccount]:
        """As `_sync_accounts` reads them: the client's reported accounts and the grant's linked
        ones, each a copy with `is_linked`."""
        linked = self.links.get(grant.pk, set())
        rows = []
        for pk, account in self.accounts.items():
            if pk in linked or (account.client_id == grant.client_id and account.cf_account_id in reported):
                row = copy.copy(account)
                row.is_linked = pk in linked
                rows.append(row)
        return rows


# "Last seen" on accounts and zones is kept to the day: rewriting it on every check would re-save
# every row of every account each hour for nothing.
SEEN_PRECISION = timedelta(days=1)


def _stale(last_seen_at: datetime | None, now: datetime) -> bool:
    return last_seen_at is None or now - last_seen_at >= SEEN_PRECISION


def _sync_accounts(
    grant: Grant, accounts: list[dict], now: datetime, reach: Reach | None = None
) -> list[CloudflareAccount]:
    """Link the accounts Cloudflare reports, unlink the ones it no longer reports. Never deletes.

    One read (the client's reported accounts and the grant's linked ones, together), or none when
    the batch read them (`reach`); a check that finds the same accounts writes nothing and opens
    no transaction.
    """
    reported = {str(a.get("id")): str(a.get("name") or a.get("id")) for a in accounts if a.get("id")}
    if reach is not None:
        rows = reach.accounts_of(grant, reported)
    else:
        link = Grant.accounts.through.objects.filter(grant_id=grant.pk, cloudflareaccount_id=OuterRef("pk"))
        rows = list(
            CloudflareAccount.objects.filter(
                Q(client_id=grant.client_id, cf_account_id__in=reported) | Q(pk__in=link.values("cloudflareaccount_id"))
            ).annotate(is_linked=Exists(link))
        )
    linked = {a.cf_account_id: a for a in rows if a.is_linked}
    known = {a.cf_account_id: a for a in rows if a.client_id == grant.client_id and a.cf_account_id in reported}
    unchanged = all(
        cf_id in known
        and cf_id in linked
        and known[cf_id].name == name
        and known[cf_id].removed_at is None
        and not _stale(known[cf_id].last_seen_at, now)
        for cf_id, name in reported.items()
    ) and all(cf_id in reported for cf_id in linked)
    if unchanged:
        return [known[cf_id] for cf_id in reported]
    with transaction.atomic():
        added, removed = [], []
        for cf_id, name in reported.items():
            account = known.get(cf_id)
            if account is None:
                # get_or_create: checks of two grants of one client may meet the same new account
                # at the same moment (the unique constraint decides, the loser reads the winner's row).
                account, _ = CloudflareAccount.objects.get_or_create(
                    client=grant.client,
                    cf_account_id=cf_id,
                    defaults={"name": name, "first_seen_at": now, "last_seen_at": now},
                )
            elif account.name != name or account.removed_at is not None or _stale(account.last_seen_at, now):
                # Only what changed is written (and "last seen" once a day): a check that finds the
                # same accounts re-saves nothing, so concurrent checks do not queue on these rows.
                account.name, account.last_seen_at, account.removed_at = name, now, None
                account.save(update_fields=["name", "last_seen_at", "removed_at"])
            known[cf_id] = account
            if cf_id not in linked:
                grant.accounts.add(account)
                added.append(account)
        for cf_id, account in linked.items():
            if cf_id in reported:
                continue
            grant.accounts.remove(account)
            removed.append(account)
            if not account.grants.filter(status__in=LIVE_STATUSES).exists():
                account.removed_at = now
                account.save(update_fields=["removed_at"])
        if added or removed:
            event_record(
                grant=grant,
                kind=GrantEvent.Kind.ACCOUNTS_CHANGED,
                actor_type=GrantEvent.Actor.CLOUDFLARE,
                message=f"Accounts reached: {len(added)} added, {len(removed)} removed.",
                detail={
                    "added": [{"id": a.cf_account_id, "name": a.name} for a in added[:MAX_LISTED]],
                    "removed": [{"id": a.cf_account_id, "name": a.name} for a in removed[:MAX_LISTED]],
                    "added_count": len(added),
                    "removed_count": len(removed),
                },
            )
    return [known[cf_id] for cf_id in reported]


def _sync_zones(
    grant: Grant, account: CloudflareAccount, zones: list[dict], now: datetime, *, existing: dict[str, Zone]
) -> None:
    """Zones added, removed or changed in one account; `existing`: its known zones by Cloudflare id."""
    reported = {str(z["id"]): z for z in zones if z.get("id")}
    # A check that finds the same zones writes nothing and opens no transaction.
    with _atomic_if_writing() as writing:
        added, removed, changed = [], [], []
        to_create, to_update = [], []
        for cf_id, data in reported.items():
            name = str(data.get("name") or "")[:255]
            status = str(data.get("status") or "")[:32]
            plan = data.get("plan") if isinstance(data.get("plan"), dict) else {}
            plan_name = str(plan.get("name") or "")[:100]
            zone = existing.get(cf_id)
            if zone is None:
                to_create.append(
                    Zone(
                        account=account,
                        cf_zone_id=cf_id,
                        name=name,
                        status=status,
                        plan_name=plan_name,
                        first_seen_at=now,
                        last_seen_at=now,
                    )
                )
                added.append(name)
                continue
            if zone.removed_at is not None:
                added.append(name)
            elif (zone.name, zone.status, zone.plan_name) != (name, status, plan_name):
                changed.append(name)
            elif not _stale(zone.last_seen_at, now):
                continue  # nothing to write
            zone.name, zone.status, zone.plan_name, zone.last_seen_at, zone.removed_at = (
                name,
                status,
                plan_name,
                now,
                None,
            )
            to_update.append(zone)
        for cf_id, zone in existing.items():
            if cf_id not in reported and zone.removed_at is None:
                zone.removed_at = now
                to_update.append(zone)
                removed.append(zone.name)
        if not (to_create or to_update or added or removed or changed):
            return
        writing()
        # Another grant reaching the same account may sync it concurrently: its rows win.
        if to_create:
            Zone.objects.bulk_create(to_create, batch_size=500, ignore_conflicts=True)
        if to_update:
            Zone.objects.bulk_update(
                to_update, ["name", "status", "plan_name", "last_seen_at", "removed_at"], batch_size=500
            )
        if added or removed or changed:
            event_record(
                grant=grant,
                kind=GrantEvent.Kind.ZONES_CHANGED,
                actor_type=GrantEvent.Actor.CLOUDFLARE,
                message=f"Zones in “{account.name}”: {len(added)} added, {len(removed)} removed, {len(changed)} changed.",
                detail={
                    "account": account.cf_account_id,
                    "added": sorted(added)[:MAX_LISTED],
                    "removed": sorted(removed)[:MAX_LISTED],
                    "changed": sorted(changed)[:MAX_LISTED],
                    "added_count": len(added),
                    "removed_count": len(removed),
                    "changed_count": len(changed),
                },
            )


class _atomic_if_writing:
    """A transaction opened only once the block says it writes (`writing()`), committed at the end."""

    def __enter__(self):
        self._atomic = None
        return self._begin

    def _begin(self) -> None:
        if self._atomic is None:
            self._atomic = transaction.atomic()
            self._atomic.__enter__()

    def __exit__(self, *exc):
        if self._atomic is not None:
            return self._atomic.__exit__(*exc)
        return False


def _mark_oauth_access(
    grant: Grant, account: CloudflareAccount, *, enabled: bool, now: datetime, error: Exception | None = None
) -> None:
    was = account.oauth_access_enabled
    if was is enabled:
        return  # unchanged: nothing to write, no event
    account.oauth_access_enabled = enabled
    account.save(update_fields=["oauth_access_enabled"])
    if not enabled and was is not False:
        event_record(
            grant=grant,
            kind=GrantEvent.Kind.OAUTH_ACCESS_DISABLED,
            actor_type=GrantEvent.Actor.CLOUDFLARE,
            message=f"Account “{account.name}” refuses OAuth apps: an account admin switched access off.",
            detail={"account": account.cf_account_id, "error": str(error)[:200] if error else ""},
        )


def _record(grant: Grant, now: datetime, *, issues: list[tuple[str, str]], reach: Reach | None = None) -> CheckOutcome:
    """Write the check's result on the row; events and alerts only where something changed. In a
    batch (`reach`), a routine result is written with the batch's others, in one statement."""
    health = Grant.Health.DEGRADED if issues else Grant.Health.HEALTHY
    scope_issues = [text for kind, text in issues if kind == "scope"]
    other_issues = [text for kind, text in issues if kind != "scope"]
    updates = {
        "health": health,
        "last_checked_at": now,
        "next_check_at": _next_check(now),
        "last_error": ("check: " + " ".join(t for _, t in issues))[:500] if issues else "",
    }
    if not issues and not getattr(grant, "check_alert_open", True):
        # The routine case: healthy, no alert of the check's to close. One UPDATE (for the batch).
        if reach is not None:
            reach.routine.append((grant.pk, now, updates["next_check_at"]))
            return CheckOutcome.HEALTHY
        Grant.objects.filter(pk=grant.pk, status__in=CHECKABLE_STATUSES).update(**updates)
        return CheckOutcome.HEALTHY
    with transaction.atomic():
        Grant.objects.filter(pk=grant.pk, status__in=CHECKABLE_STATUSES).update(**updates)
        if scope_issues:
            alert = alert_open(kind=Alert.Kind.SCOPE_MISSING, grant=grant, message=f"{_who(grant)}: {scope_issues[0]}")
            if alert is not None:
                event_record(
                    grant=grant,
                    kind=GrantEvent.Kind.SCOPE_MISSING,
                    actor_type=GrantEvent.Actor.CLOUDFLARE,
                    message=scope_issues[0],
                    detail={"missing": grant.missing_required_scopes},
                )
        else:
            alerts_resolve(grant=grant, kinds=[Alert.Kind.SCOPE_MISSING])
        if other_issues:
            alert_open(kind=Alert.Kind.HEALTH_FAILING, grant=grant, message=f"{_who(grant)}: {other_issues[0]}")
        elif alerts_resolve(grant=grant, kinds=[Alert.Kind.HEALTH_FAILING]):
            event_record(grant=grant, kind=GrantEvent.Kind.RECOVERED, message="Health check passes again.")
            alert_open(kind=Alert.Kind.RECOVERED, grant=grant, message=f"{_who(grant)}: health check passes again.")
    return CheckOutcome.DEGRADED if issues else CheckOutcome.HEALTHY


def _who(grant: Grant) -> str:
    return f"{grant.client.name} / {grant.cf_user_email or grant.cf_user_id}"


def grants_dispatch_due_checks(
    *, now: datetime | None = None, batch_size: int | None = None, max_batches: int | None = None
) -> int:
    """Run by beat every minute: enqueue the grants whose check is due, `GRANT_CHECK_BATCH` per
    message (one `check_grants_task` each; one `check_grant_task` per grant when it is 1)."""
    from ..tasks import check_grant_task, check_grants_task

    per_message = max(1, int(settings.GRANT_CHECK_BATCH))
    return grants_dispatch_due(
        due=lambda now: grants_due_for_check(now=now),
        due_field="next_check_at",
        task=check_grants_task if per_message > 1 else check_grant_task,
        per_message=per_message,
        label="check",
        now=now,
        batch_size=batch_size,
        max_batches=max_batches,
    )
