"""Tokens received while the database is unreachable: a durable, encrypted spool.

A refresh that got new tokens from Cloudflare must never drop them: the old refresh token has
rotated, so without them the grant is lost. `refresh._on_success` retries its fenced write while
it holds (and extends) the lease; if the database stays unreachable past `GRANT_WRITE_RETRY_SECONDS`
the tokens come here, and are written to the grant, fenced by the generation and refresh-token
fingerprint the refresh read, as soon as the database answers again:

- at the start of every refresh of that grant (before any claim: nobody sends a rotated token),
- by every refresh sweep (all pending records),
- when a worker starts (`agencyportal/celery.py`).

Where: both places below, each best effort; a record counts as spooled when one of them holds it.

- **Redis** (the broker's, or `CLOUDFLARE_RATELIMIT_REDIS_URL`), one hash field per record: a
  database outage does not touch it and every worker host sees it, so the grant's next refresh on
  any host applies it first.
- **A file** under `VAR_DIR/token-spool/`, written atomically and fsynced: survives a Redis restart
  without persistence (the worker host applies it on its next sweep or start).

Each record is a Fernet token made with `TOKEN_ENCRYPTION_KEYS` (the keys of the token columns),
so a spooled token is as protected as a stored one. A record whose fence no longer matches (the
grant moved on, ended, or was already written) is discarded.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F, Q
from django.utils import timezone

from .. import crypto, ratelimit

logger = logging.getLogger(__name__)

REDIS_KEY = "ap:token-spool"


@dataclass(frozen=True)
class SpooledTokens:
    grant_id: int
    seen_generation: int
    old_refresh_fp: str
    access_token: str
    refresh_token: str
    expires_in: int
    scopes: list[str]
    sent_at: str  # ISO time the refresh request was sent (the expiry counts from it)
    # The spooling holder's lease end (ISO): its own claim does not keep the record out, a later
    # holder's does (that one read the row already and stands back).
    lease_until: str = ""

    @property
    def key(self) -> str:
        return f"{self.grant_id}-{self.seen_generation}"

    def __repr__(self) -> str:  # never print tokens
        return f"SpooledTokens(grant_id={self.grant_id}, seen_generation={self.seen_generation})"


def _directory() -> Path:
    return Path(settings.VAR_DIR) / "token-spool"


def _redis_key() -> str:
    return f"{getattr(settings, 'CLOUDFLARE_RATELIMIT_KEY_PREFIX', 'ap:rl')}:{REDIS_KEY}"


def _encode(record: SpooledTokens) -> bytes:
    return crypto.encrypt(json.dumps(asdict(record))).encode()


def _decode(blob: bytes | str) -> SpooledTokens | None:
    try:
        text = blob.decode() if isinstance(blob, bytes) else blob
        return SpooledTokens(**json.loads(crypto.decrypt(text)))
    except (crypto.TokenDecryptionError, ValueError, TypeError) as exc:
        logger.error("token spool: unreadable record skipped (%s)", type(exc).__name__)
        return None


def spool_put(record: SpooledTokens) -> bool:
    """Keep the record in Redis and in a file; True when at least one of them holds it."""
    blob = _encode(record)
    stored = []
    client = ratelimit._redis()
    if client is not None:
        try:
            client.hset(_redis_key(), record.key, blob)
            stored.append("redis")
        except Exception as exc:  # noqa: BLE001 - the file may still hold it
            logger.warning("token spool: Redis unavailable (%s)", type(exc).__name__)
    try:
        directory = _directory()
        directory.mkdir(parents=True, exist_ok=True)
        final = directory / f"{record.key}.tok"
        tmp = directory / f".{record.key}.{os.getpid()}.tmp"
        with open(tmp, "wb") as out:
            out.write(blob)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, final)
        stored.append("file")
    except OSError as exc:
        logger.warning("token spool: file not written (%s)", type(exc).__name__)
    if stored:
        logger.warning("token spool: grant=%s new tokens spooled (%s)", record.grant_id, "+".join(stored))
    else:
        logger.error("token spool: grant=%s new tokens could not be kept anywhere", record.grant_id)
    return bool(stored)


def _pending(grant_id: int | None = None) -> dict[str, SpooledTokens]:
    records: dict[str, SpooledTokens] = {}
    client = ratelimit._redis()
    if client is not None:
        try:
            for field, blob in client.hgetall(_redis_key()).items():
                field = field.decode() if isinstance(field, bytes) else field
                if grant_id is not None and not field.startswith(f"{grant_id}-"):
                    continue
                record = _decode(blob)
                if record is not None:
                    records[record.key] = record
        except Exception as exc:  # noqa: BLE001
            logger.warning("token spool: Redis unavailable (%s)", type(exc).__name__)
    directory = _directory()
    if directory.is_dir():
        pattern = f"{grant_id}-*.tok" if grant_id is not None else "*.tok"
        for path in directory.glob(pattern):
            try:
                record = _decode(path.read_bytes())
            except OSError:
                continue
            if record is not None:
                records.setdefault(record.key, record)
    return records


def _discard(key: str) -> None:
    client = ratelimit._redis()
    if client is not None:
        try:
            client.hdel(_redis_key(), key)
        except Exception:  # noqa: BLE001, S110 - applying it again later is harmless (fenced)
            pass
    try:
        (_directory() / f"{key}.tok").unlink(missing_ok=True)
    except OSError:
        pass


def spool_has(grant_id: int) -> bool:
    return bool(_pending(grant_id))


def spool_apply(*, grant_id: int | None = None) -> int:
    """Write pending records to their grants (all, or one grant's). Returns how many were applied.

    Stops quietly when the database is still unreachable: the records stay for the next call.
    """
    applied = 0
    for key, record in sorted(_pending(grant_id).items()):
        try:
            outcome = _apply(record)
        except DatabaseError as exc:
            logger.warning("token spool: database still unavailable (%s); records kept", type(exc).__name__)
            return applied
        if outcome == "kept":
            continue
        if outcome == "applied":
            applied += 1
        logger.warning("token spool: grant=%s record %s", record.grant_id, outcome)
        _discard(key)
    return applied


def spool_pending(*, grant_id: int) -> bool:
    """True when tokens for this grant wait in the spool (Redis or file)."""
    return bool(_pending(grant_id))


def spool_pending_ids() -> set[int]:
    """The grants with tokens waiting in the spool (one read of Redis and the directory)."""
    return {record.grant_id for record in _pending().values()}


def _not_claimed_by_another(record: SpooledTokens, now: datetime) -> Q:
    free = Q(refresh_lease_until__isnull=True) | Q(refresh_lease_until__lt=now)
    if record.lease_until:
        # A later holder's lease always ends after the spooling holder's (it claimed once that
        # one had expired): up to that end, the lease is the spooling holder's own.
        free |= Q(refresh_lease_until__lte=datetime.fromisoformat(record.lease_until))
    return free


def _apply(record: SpooledTokens) -> str:
    from ..models import Grant
    from ..selectors import REFRESHABLE_STATUSES
    from .refresh import refresh_due_at

    now = timezone.now()
    sent_at = datetime.fromisoformat(record.sent_at)
    expires_at = sent_at + timedelta(seconds=record.expires_in)
    new_refresh_fp = crypto.fingerprint(record.refresh_token)
    with transaction.atomic():
        fence = Grant.objects.filter(
            pk=record.grant_id,
            refresh_generation=record.seen_generation,
            refresh_token_fp=record.old_refresh_fp,
            status__in=REFRESHABLE_STATUSES,
        ).filter(
            # Never under another live claim: its holder read the row already and decides on that
            # (it finds this record and stands back, see refresh.grant_refresh); applied after it.
            _not_claimed_by_another(record, now)
        )
        row = fence.select_for_update().values("status", "granted_scopes").first()
        if row is None:
            current = Grant.objects.filter(pk=record.grant_id).values("refresh_token_fp", "refresh_generation").first()
            if current and current["refresh_token_fp"] == new_refresh_fp:
                return "already written"
            if (
                current
                and current["refresh_generation"] == record.seen_generation
                and current["refresh_token_fp"] == record.old_refresh_fp
            ):
                return "kept"  # claimed right now: applied once the claim ends
            return "stale (the grant moved on): discarded"
        updates = {
            "access_token": record.access_token,
            "access_token_fp": crypto.fingerprint(record.access_token),
            "refresh_token": record.refresh_token,
            "refresh_token_fp": new_refresh_fp,
            "access_expires_at": expires_at,
            "last_refreshed_at": now,
            "next_refresh_at": refresh_due_at(expires_at=expires_at, lifetime=record.expires_in),
            "refresh_lease_until": None,
            "refresh_uncertain_since": None,
            "refresh_failing_since": None,
            "consecutive_failures": 0,
            "last_error": "",
            "refresh_generation": F("refresh_generation") + 1,
        }
        if row["status"] == Grant.Status.REFRESH_FAILING:
            updates.update(status=Grant.Status.ACTIVE, status_changed_at=now)
        if record.scopes and set(record.scopes) != set(row["granted_scopes"]):
            updates["granted_scopes"] = record.scopes
        fence.update(**updates)
    return "applied"
