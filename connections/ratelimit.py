"""Outbound budget for calls to Cloudflare, shared by every worker process.

Cloudflare allows 1200 API requests per 5 minutes per user (shared with that user's own dashboard
use) and 200 requests per second per IP; going over blocks *all* calls for 5 minutes. The portal
stays well under both:

- a per-Cloudflare-user budget: `CLOUDFLARE_USER_BUDGET` requests per `CLOUDFLARE_USER_BUDGET_WINDOW`
  seconds (fixed window);
- a global cap: `CLOUDFLARE_GLOBAL_RATE` requests per second for all workers together;
- a 429's `Retry-After` blocks that user (or everything, for the token endpoint) until then.

With Redis (the broker in production) the counters live in Redis and one Lua script checks and
counts atomically, so N worker processes on M machines share one budget. Without Redis (development
with the filesystem broker: one worker) a process-local limiter does the same job. If Redis is
unreachable the local limiter takes over for that call: a broker outage must not stop the engine
from backing off, and workers cannot fetch tasks without Redis anyway.

`acquire()` never sleeps: it answers 0 (go) or how many seconds to wait, and the caller decides
(a health check reschedules itself; a refresh waits a little inside its lease).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

from django.conf import settings

logger = logging.getLogger(__name__)

GLOBAL_KEY = "*"


def _prefix() -> str:
    # One namespace per deployment sharing a Redis; tests use their own.
    return getattr(settings, "CLOUDFLARE_RATELIMIT_KEY_PREFIX", "ap:rl")


# KEYS: 1 global block, 2 user block, 3 global window counter, 4 user window counter
# ARGV: 1 global rate, 2 user budget, 3 user window seconds, 4 seconds left in the user window,
#       5 count the user (1/0)
# Returns a wait in milliseconds (0 = granted and counted).
_LUA = """
local wait = 0
local gb = redis.call('PTTL', KEYS[1])
if gb > 0 then wait = gb end
if ARGV[5] == '1' then
  local ub = redis.call('PTTL', KEYS[2])
  if ub > wait then wait = ub end
end
if wait > 0 then return wait end
local g = tonumber(redis.call('GET', KEYS[3]) or '0')
if g >= tonumber(ARGV[1]) then
  local t = redis.call('PTTL', KEYS[3])
  if t <= 0 then t = 50 end
  return t
end
if ARGV[5] == '1' then
  local u = tonumber(redis.call('GET', KEYS[4]) or '0')
  if u >= tonumber(ARGV[2]) then
    local t = redis.call('PTTL', KEYS[4])
    if t <= 0 then t = tonumber(ARGV[4]) * 1000 end
    return t
  end
  redis.call('INCR', KEYS[4])
  redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[4]) * 1000)
end
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], 1000)
return 0
"""


@dataclass
class _Local:
    """Process-local counters: the fallback without Redis (same semantics, one process)."""

    lock: threading.Lock
    global_window: int = -1
    global_count: int = 0
    blocks: dict | None = None
    user_windows: dict | None = None


_local = _Local(lock=threading.Lock(), blocks={}, user_windows={})
_redis_client = None
_redis_script = None
_redis_down_until = 0.0


def _redis_url() -> str:
    url = getattr(settings, "CLOUDFLARE_RATELIMIT_REDIS_URL", "") or settings.CELERY_BROKER_URL
    return url if url.startswith(("redis://", "rediss://")) else ""


def _redis():
    """A Redis client with short timeouts, or None (not configured, or down for a few seconds)."""
    global _redis_client, _redis_script
    url = _redis_url()
    if not url or time.monotonic() < _redis_down_until:
        return None
    if _redis_client is None:
        import redis

        _redis_client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        _redis_script = _redis_client.register_script(_LUA)
    return _redis_client


def _user_window() -> int:
    return max(1, int(settings.CLOUDFLARE_USER_BUDGET_WINDOW))


def acquire(*, user_key: str | None) -> float:
    """Count one request for this Cloudflare user (or only globally when None).

    Returns 0.0 when the request may go now (and it has been counted), else the seconds to wait
    before asking again (nothing counted).
    """
    global _redis_down_until
    client = _redis()
    if client is not None:
        now = time.time()
        window = _user_window()
        index = int(now // window)
        left = max(1, math.ceil((index + 1) * window - now))
        user = user_key or ""
        keys = [
            f"{_prefix()}:block:{GLOBAL_KEY}",
            f"{_prefix()}:block:u:{user}",
            f"{_prefix()}:g:{int(now)}",
            f"{_prefix()}:u:{user}:{index}",
        ]
        args = [
            settings.CLOUDFLARE_GLOBAL_RATE,
            settings.CLOUDFLARE_USER_BUDGET,
            window,
            left,
            "1" if user_key else "0",
        ]
        try:
            wait_ms = int(_redis_script(keys=keys, args=args, client=client))
            return wait_ms / 1000.0
        except Exception as exc:  # noqa: BLE001 - any Redis failure: fall back to local limits
            _redis_down_until = time.monotonic() + 5.0
            logger.warning("Rate limiter: Redis unavailable (%s); using process-local limits", type(exc).__name__)
    return _acquire_local(user_key)


def _acquire_local(user_key: str | None) -> float:
    now = time.time()
    with _local.lock:
        blocks = _local.blocks
        wait = max(0.0, blocks.get(GLOBAL_KEY, 0.0) - now)
        if user_key:
            wait = max(wait, blocks.get(user_key, 0.0) - now)
        if wait > 0:
            return wait
        second = int(now)
        if second != _local.global_window:
            _local.global_window, _local.global_count = second, 0
        if _local.global_count >= settings.CLOUDFLARE_GLOBAL_RATE:
            return max(0.01, second + 1 - now)
        if user_key:
            window = _user_window()
            index = int(now // window)
            seen_index, count = _local.user_windows.get(user_key, (index, 0))
            if seen_index != index:
                count = 0
            if count >= settings.CLOUDFLARE_USER_BUDGET:
                return max(0.01, (index + 1) * window - now)
            _local.user_windows[user_key] = (index, count + 1)
        _local.global_count += 1
        return 0.0


def block(*, user_key: str | None, seconds: float) -> None:
    """Honour a 429's Retry-After: no request for this user (None: for anyone) until then."""
    global _redis_down_until
    seconds = max(1.0, min(float(seconds), 3600.0))
    key = user_key or GLOBAL_KEY
    client = _redis()
    if client is not None:
        try:
            # Never shorten an existing block: keep the longer of the two expiries.
            name = f"{_prefix()}:block:{'u:' + key if user_key else GLOBAL_KEY}"
            current = client.pttl(name)
            if current is None or current < seconds * 1000:
                client.set(name, "1", px=int(seconds * 1000))
            return
        except Exception as exc:  # noqa: BLE001
            _redis_down_until = time.monotonic() + 5.0
            logger.warning("Rate limiter: Redis unavailable (%s); blocking locally", type(exc).__name__)
    with _local.lock:
        until = time.time() + seconds
        _local.blocks[key] = max(_local.blocks.get(key, 0.0), until)


def wait_for_slot(*, user_key: str | None, max_wait: float) -> bool:
    """Block the calling thread until a request may go, at most `max_wait` seconds. True = counted."""
    deadline = time.monotonic() + max_wait
    while True:
        wait = acquire(user_key=user_key)
        if wait <= 0:
            return True
        if time.monotonic() + wait > deadline:
            return False
        time.sleep(min(wait, 1.0))


def reset() -> None:
    """Forget every counter and block (tests and benchmarks)."""
    global _redis_down_until
    _redis_down_until = 0.0
    with _local.lock:
        _local.global_window, _local.global_count = -1, 0
        _local.blocks.clear()
        _local.user_windows.clear()
    client = _redis()
    if client is not None:
        try:
            for key in client.scan_iter(f"{_prefix()}:*", count=1000):
                client.delete(key)
        except Exception as exc:  # noqa: BLE001 - best effort: counters expire on their own
            logger.warning("Rate limiter: could not reset Redis counters (%s)", type(exc).__name__)
