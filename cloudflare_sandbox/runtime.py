"""In-memory runtime state: settings, faults, call counters, the rate limiter and the clock.

These are deliberately not persisted: they describe how the sandbox behaves *now* (set from the
command line and changed by tests through the control endpoint), not Cloudflare's data. A restart
returns them to their start-up values while the database keeps users, grants and tokens.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from typing import Any, Final

#: Behaviours Cloudflare does not document (reference "Unknowns") are settings, with defaults
#: chosen as noted in the README.
DEFAULT_SETTINGS: Final[dict[str, Any]] = {
    "access_ttl": 3600,
    "refresh_ttl": 30 * 24 * 3600,
    "code_ttl": 600,
    "refresh_grace_seconds": 0,
    "rotate_refresh_tokens": True,
    "refresh_revokes_old_access": True,
    "invalid_grant_status": 400,
    "send_iss": True,
    "revoke_requires_client_auth": True,
    "revoke_refresh_kills_access": True,
    "require_pkce": True,
    "min_state_length": 8,
    "scope_plus": "literal",
    "rate_limit": 1200,
    "rate_window": 300,
    "ip_rate_limit": 0,
    "missing_scope_code": 10000,
    "rate_limit_code": 971,
    # What `/user/tokens/verify` answers for a disabled, expired or not-yet-valid API token:
    # "error" (401 code 1000, like an unknown token) or "status" (200 with the token's status).
    "inactive_token_verify": "error",
}

_INT_SETTINGS: Final = {
    "access_ttl",
    "refresh_ttl",
    "code_ttl",
    "refresh_grace_seconds",
    "min_state_length",
    "rate_limit",
    "rate_window",
    "ip_rate_limit",
}
_BOOL_SETTINGS: Final = {
    "rotate_refresh_tokens",
    "refresh_revokes_old_access",
    "send_iss",
    "revoke_requires_client_auth",
    "revoke_refresh_kills_access",
    "require_pkce",
}

#: Malformed token-endpoint answers for testing the client's response validation. The first group
#: processes the request normally and then corrupts the JSON; the second (BAD_TOKEN_REPLACEMENTS)
#: replaces the answer without touching any state.
BAD_TOKEN_RESPONSES: Final = frozenset(
    {
        "no_access_token",
        "no_token_type",
        "wrong_token_type",
        "expires_in_negative",
        "expires_in_huge",
        "expires_in_string",
        "narrower_scope",
        "html_200",
        "non_json",
        "empty_body",
        "error_200",
        "redirect",
        "oversized",
    }
)
BAD_TOKEN_REPLACEMENTS: Final = frozenset({"html_200", "non_json", "empty_body", "error_200", "redirect", "oversized"})

FAULT_ENDPOINTS: Final = frozenset({"token", "revoke", "api", "auth", "userinfo"})
DEFAULT_FAULT_ENDPOINTS: Final = frozenset({"token", "revoke", "api"})


class SettingsError(ValueError):
    """A setting or fault value the sandbox cannot accept."""


def validate_settings(values: dict[str, Any]) -> dict[str, Any]:
    """Check types and ranges of a (partial) settings mapping; return the normalised copy."""
    clean: dict[str, Any] = {}
    for key, value in values.items():
        if key not in DEFAULT_SETTINGS:
            raise SettingsError(f"unknown setting {key!r}")
        if key in _BOOL_SETTINGS:
            if not isinstance(value, bool):
                raise SettingsError(f"{key} must be true or false")
        elif key in _INT_SETTINGS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SettingsError(f"{key} must be a non-negative integer")
            if key in {"access_ttl", "rate_limit", "rate_window", "code_ttl"} and value < 1:
                raise SettingsError(f"{key} must be at least 1")
        elif key == "invalid_grant_status":
            if value not in (400, 401):
                raise SettingsError("invalid_grant_status must be 400 or 401")
        elif key == "missing_scope_code":
            if value not in (10000, 9109):
                raise SettingsError("missing_scope_code must be 10000 or 9109")
        elif key == "rate_limit_code":
            if value not in (971, 10429):
                raise SettingsError("rate_limit_code must be 971 or 10429")
        elif key == "inactive_token_verify" and value not in ("error", "status"):
            raise SettingsError("inactive_token_verify must be 'error' or 'status'")
        elif key == "scope_plus" and value not in ("literal", "space"):
            raise SettingsError("scope_plus must be 'literal' or 'space'")
        clean[key] = value
    return clean


class Settings:
    """Current settings; read with attribute access (``settings.access_ttl``)."""

    def __init__(self, initial: dict[str, Any] | None = None) -> None:
        self._lock = threading.Lock()
        self._startup = {**DEFAULT_SETTINGS, **validate_settings(initial or {})}
        self._values = dict(self._startup)

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("_values")
        if values is not None and name in values:
            return values[name]
        raise AttributeError(name)

    def snapshot(self) -> dict[str, Any]:
        """A copy of all current values."""
        with self._lock:
            return dict(self._values)

    def update(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply a validated subset; returns the new snapshot."""
        clean = validate_settings(changes)
        with self._lock:
            self._values.update(clean)
            return dict(self._values)

    def reset(self) -> dict[str, Any]:
        """Back to the start-up values (defaults plus command-line options)."""
        with self._lock:
            self._values = dict(self._startup)
            return dict(self._values)


class Clock:
    """Wall clock plus an offset tests can advance to age codes and tokens without sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        """Current sandbox time in seconds since the epoch."""
        return time.time() + self.offset


def _endpoint_list(value: Any, key: str) -> frozenset[str]:
    if value in (None, []):
        return DEFAULT_FAULT_ENDPOINTS
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SettingsError(f"{key} must be a list of endpoint names")
    unknown = set(value) - FAULT_ENDPOINTS
    if unknown:
        raise SettingsError(f"{key}: unknown endpoints {sorted(unknown)}; use {sorted(FAULT_ENDPOINTS)}")
    return frozenset(value)


def _rate(value: Any, key: str) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise SettingsError(f"{key} must be a number between 0 and 1 (or a boolean)")
    return float(value)


class Faults:
    """Fault-injection configuration; one ``POST /__sandbox__/faults`` replaces it entirely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._config: dict[str, Any] = {}
        self._rng = random.Random()
        self.latency_ms = 0
        self.latency_max_ms = 0  # > latency_ms: each request waits a uniform random time in between
        self.latency_endpoints = DEFAULT_FAULT_ENDPOINTS
        self.error_5xx_rate = 0.0
        self.error_5xx_endpoints = DEFAULT_FAULT_ENDPOINTS
        self.storm_429 = False
        self.storm_429_endpoints = DEFAULT_FAULT_ENDPOINTS
        self.retry_after = 60
        self.html_challenge = False
        self.drop_after_rotate = 0
        self.revoke_503 = 0.0
        self.revoke_400 = False
        self.bad_token_response: str | None = None
        self.revoke_after_calls = 0
        self.revoke_after_count = "grant"
        self.revoke_after_grants: frozenset[str] = frozenset()
        self.revoke_reason = "user"
        self._grant_calls: Counter[str] = Counter()
        self._total_calls = 0
        self._doomed: set[str] = set()

    def configure(self, config: dict[str, Any]) -> dict[str, Any]:
        """Validate and install a whole new configuration (missing keys mean "off")."""
        known = {
            "latency_ms",
            "latency_max_ms",
            "latency_endpoints",
            "error_5xx_rate",
            "error_5xx_endpoints",
            "storm_429",
            "storm_429_endpoints",
            "retry_after",
            "html_challenge",
            "drop_after_rotate",
            "revoke_503",
            "revoke_400",
            "bad_token_response",
            "revoke_after_calls",
            "revoke_after_count",
            "revoke_after_grants",
            "revoke_reason",
            "seed",
        }
        unknown = set(config) - known
        if unknown:
            raise SettingsError(f"unknown fault keys {sorted(unknown)}")
        latency = config.get("latency_ms", 0)
        if isinstance(latency, bool) or not isinstance(latency, int) or latency < 0:
            raise SettingsError("latency_ms must be a non-negative integer")
        latency_max = config.get("latency_max_ms", 0)
        if isinstance(latency_max, bool) or not isinstance(latency_max, int) or latency_max < 0:
            raise SettingsError("latency_max_ms must be a non-negative integer")
        retry_after = config.get("retry_after", 60)
        if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
            raise SettingsError("retry_after must be a non-negative integer")
        drops = config.get("drop_after_rotate", 0)
        if isinstance(drops, bool) or not isinstance(drops, int) or drops < 0:
            raise SettingsError("drop_after_rotate must be a non-negative integer")
        bad = config.get("bad_token_response")
        if bad is not None and bad not in BAD_TOKEN_RESPONSES:
            raise SettingsError(f"bad_token_response must be one of {sorted(BAD_TOKEN_RESPONSES)}")
        for flag in ("storm_429", "html_challenge", "revoke_400"):
            if not isinstance(config.get(flag, False), bool):
                raise SettingsError(f"{flag} must be true or false")
        revoke_after = config.get("revoke_after_calls", 0)
        if isinstance(revoke_after, bool) or not isinstance(revoke_after, int) or revoke_after < 0:
            raise SettingsError("revoke_after_calls must be a non-negative integer")
        revoke_count = config.get("revoke_after_count", "grant")
        if revoke_count not in ("grant", "global"):
            raise SettingsError("revoke_after_count must be 'grant' or 'global'")
        revoke_grants = config.get("revoke_after_grants", [])
        if not isinstance(revoke_grants, list) or not all(isinstance(g, str) for g in revoke_grants):
            raise SettingsError("revoke_after_grants must be a list of grant ids")
        revoke_reason = config.get("revoke_reason", "user")
        if not isinstance(revoke_reason, str) or not revoke_reason:
            raise SettingsError("revoke_reason must be a non-empty string")
        seed = config.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise SettingsError("seed must be an integer")
        values = {
            "latency_ms": latency,
            "latency_max_ms": latency_max,
            "latency_endpoints": _endpoint_list(config.get("latency_endpoints"), "latency_endpoints"),
            "error_5xx_rate": _rate(config.get("error_5xx_rate", 0.0), "error_5xx_rate"),
            "error_5xx_endpoints": _endpoint_list(config.get("error_5xx_endpoints"), "error_5xx_endpoints"),
            "storm_429": config.get("storm_429", False),
            "storm_429_endpoints": _endpoint_list(config.get("storm_429_endpoints"), "storm_429_endpoints"),
            "retry_after": retry_after,
            "html_challenge": config.get("html_challenge", False),
            "drop_after_rotate": drops,
            "revoke_503": _rate(config.get("revoke_503", 0.0), "revoke_503"),
            "revoke_400": config.get("revoke_400", False),
            "bad_token_response": bad,
            "revoke_after_calls": revoke_after,
            "revoke_after_count": revoke_count,
            "revoke_after_grants": frozenset(revoke_grants),
            "revoke_reason": revoke_reason,
        }
        with self._lock:
            self._rng = random.Random(seed)
            self._grant_calls.clear()
            self._total_calls = 0
            self._doomed.clear()
            for key, value in values.items():
                setattr(self, key, value)
            self._config = dict(config)
        return self.snapshot()

    def clear(self) -> dict[str, Any]:
        """Switch every fault off."""
        return self.configure({})

    def snapshot(self) -> dict[str, Any]:
        """Current configuration in the shape ``POST /__sandbox__/faults`` accepts."""
        with self._lock:
            return {
                "latency_ms": self.latency_ms,
                "latency_max_ms": self.latency_max_ms,
                "latency_endpoints": sorted(self.latency_endpoints),
                "error_5xx_rate": self.error_5xx_rate,
                "error_5xx_endpoints": sorted(self.error_5xx_endpoints),
                "storm_429": self.storm_429,
                "storm_429_endpoints": sorted(self.storm_429_endpoints),
                "retry_after": self.retry_after,
                "html_challenge": self.html_challenge,
                "drop_after_rotate": self.drop_after_rotate,
                "revoke_503": self.revoke_503,
                "revoke_400": self.revoke_400,
                "bad_token_response": self.bad_token_response,
                "revoke_after_calls": self.revoke_after_calls,
                "revoke_after_count": self.revoke_after_count,
                "revoke_after_grants": sorted(self.revoke_after_grants),
                "revoke_reason": self.revoke_reason,
                "seed": self._config.get("seed"),
            }

    def roll(self, rate: float) -> bool:
        """True with probability ``rate`` (deterministic when a seed was given)."""
        if rate <= 0:
            return False
        if rate >= 1:
            return True
        with self._lock:
            return self._rng.random() < rate

    def pick_5xx(self) -> int:
        """Which 5xx to answer: 500, 502 or 503, like a flaky origin behind Cloudflare's edge."""
        with self._lock:
            return self._rng.choice((500, 502, 503))

    def count_grant_call(self, grant_id: str) -> tuple[bool, list[str]]:
        """Count one authenticated API call of a grant for ``revoke_after_calls``.

        Returns (refuse, to_revoke). The decision is taken under the lock so concurrent calls get
        exact counts:

        1. A grant already doomed by this fault is refused (answered as a revoked token) even if its
           revocation has not been committed yet, so never more than N calls succeed.
        2. Mode ``grant``: each targeted grant (all grants when ``revoke_after_grants`` is empty)
           counts its own calls; its N-th call is answered normally and then the grant is revoked.
        3. Mode ``global``: every grant's calls count towards one total; the N-th call is answered
           normally and then the targeted grants (or, none named, the caller's grant) are revoked.
           It fires once.
        """
        with self._lock:
            limit = self.revoke_after_calls
            if not limit:
                return False, []
            if grant_id in self._doomed:
                return True, []
            targets = self.revoke_after_grants
            if self.revoke_after_count == "grant":
                if targets and grant_id not in targets:
                    return False, []
                self._grant_calls[grant_id] += 1
                if self._grant_calls[grant_id] == limit:
                    self._doomed.add(grant_id)
                    return False, [grant_id]
                return False, []
            self._total_calls += 1
            if self._total_calls == limit:
                doomed = sorted(targets) if targets else [grant_id]
                self._doomed.update(doomed)
                return False, doomed
            return False, []

    def latency_seconds(self) -> float:
        """How long this request waits: `latency_ms`, or uniform up to `latency_max_ms` if larger."""
        with self._lock:
            low, high = self.latency_ms, self.latency_max_ms
            if high > low:
                return self._rng.uniform(low, high) / 1000
            return low / 1000

    def take_drop(self) -> bool:
        """Consume one "rotate then drop the connection" credit, if any is left."""
        with self._lock:
            if self.drop_after_rotate > 0:
                self.drop_after_rotate -= 1
                return True
            return False


class Counters:
    """Calls per endpoint since the last reset (ground truth for tests and benchmarks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, *keys: str) -> None:
        """Count one call under each key."""
        with self._lock:
            for key in keys:
                self._counts[key] += 1

    def snapshot(self) -> dict[str, int]:
        """A copy of all counts."""
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        """Zero every count."""
        with self._lock:
            self._counts.clear()


class RateLimiter:
    """Fixed-window limit per Cloudflare user: ``rate_limit`` calls per ``rate_window`` seconds.

    Cloudflare documents 1200 requests per 5 minutes per user, and that exceeding it blocks all calls
    for 5 minutes with 429 [doc]. The sandbox blocks for one window from the first refused call.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, list[float]] = {}

    def hit(self, user_id: str, now: float, limit: int, window: int) -> tuple[bool, int, int]:
        """Count a call; return (allowed, remaining, seconds until the window resets)."""
        with self._lock:
            bucket = self._buckets.get(user_id)
            if bucket is None:
                bucket = self._buckets[user_id] = [now, 0.0, 0.0]
            start, count, blocked_until = bucket
            if blocked_until > now:
                return False, 0, max(1, math.ceil(blocked_until - now))
            if now - start >= window:
                start, count = now, 0.0
            count += 1
            if count > limit:
                blocked_until = now + window
                self._buckets[user_id] = [start, count, blocked_until]
                return False, 0, window
            self._buckets[user_id] = [start, count, 0.0]
            return True, int(limit - count), max(0, math.ceil(start + window - now))

    def reset(self) -> None:
        """Forget all windows and blocks."""
        with self._lock:
            self._buckets.clear()


class PeakMeter:
    """Highest number of requests seen in any one second, per key (``ip:…``, ``user:…``).

    Benchmarks report peak request rates per IP and per Cloudflare user against Cloudflare's
    limits (200 req/s per IP, 1200 per 5 minutes per user [doc]).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: dict[str, tuple[int, int]] = {}
        self._peaks: dict[str, int] = {}

    def hit(self, key: str, now: float) -> int:
        """Count a request; returns how many this key made in the current second."""
        second = int(now)
        with self._lock:
            current_second, count = self._current.get(key, (second, 0))
            count = count + 1 if current_second == second else 1
            self._current[key] = (second, count)
            if count > self._peaks.get(key, 0):
                self._peaks[key] = count
            return count

    def snapshot(self) -> dict[str, int]:
        """Peak requests per second per key."""
        with self._lock:
            return dict(self._peaks)

    def reset(self) -> None:
        """Forget everything."""
        with self._lock:
            self._current.clear()
            self._peaks.clear()
