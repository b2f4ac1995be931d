"""The outbound budget: per Cloudflare user, global, and Retry-After blocks.

Run on both backends: the process-local limiter (no Redis) and the shared Redis limiter, whose
counters every worker process sees.
"""

from __future__ import annotations

import multiprocessing
import time

import pytest

from connections import ratelimit


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
def limiter(request, settings):
    settings.CLOUDFLARE_RATELIMIT_KEY_PREFIX = f"test-rl-{time.monotonic_ns()}"
    if request.param == "local":
        settings.CLOUDFLARE_RATELIMIT_REDIS_URL = ""
        settings.CELERY_BROKER_URL = "filesystem://"
    ratelimit._redis_client = None
    ratelimit.reset()
    yield request.param
    ratelimit.reset()
    ratelimit._redis_client = None


def test_it_caps_one_users_requests_per_window(limiter, settings):
    settings.CLOUDFLARE_USER_BUDGET, settings.CLOUDFLARE_USER_BUDGET_WINDOW = 5, 300
    settings.CLOUDFLARE_GLOBAL_RATE = 1000

    granted = [ratelimit.acquire(user_key="user-a") for _ in range(8)]

    assert granted[:5] == [0.0] * 5
    assert all(0 < wait <= 300 for wait in granted[5:])
    # Another Cloudflare user has a budget of its own.
    assert ratelimit.acquire(user_key="user-b") == 0.0


def test_it_caps_all_requests_per_second(limiter, settings):
    settings.CLOUDFLARE_GLOBAL_RATE = 10
    settings.CLOUDFLARE_USER_BUDGET = 1000
    # Start at the beginning of a second so the ten fit in one window.
    time.sleep(1 - (time.time() % 1) + 0.01)

    results = [ratelimit.acquire(user_key=f"user-{n}") for n in range(15)]

    assert results.count(0.0) == 10
    assert all(0 < w <= 1.0 for w in results if w)


def test_it_does_not_spend_a_users_budget_on_a_refused_request(limiter, settings):
    settings.CLOUDFLARE_GLOBAL_RATE, settings.CLOUDFLARE_USER_BUDGET = 1, 2
    time.sleep(1 - (time.time() % 1) + 0.01)
    assert ratelimit.acquire(user_key="u") == 0.0
    assert ratelimit.acquire(user_key="u") > 0  # refused by the global cap
    time.sleep(1.05)
    assert ratelimit.acquire(user_key="u") == 0.0  # the user's second slot was not used up


def test_it_blocks_a_user_until_retry_after(limiter):
    ratelimit.block(user_key="user-a", seconds=30)

    assert 25 < ratelimit.acquire(user_key="user-a") <= 30
    assert ratelimit.acquire(user_key="user-b") == 0.0


def test_it_blocks_everyone_on_a_global_retry_after(limiter):
    ratelimit.block(user_key=None, seconds=10)

    assert ratelimit.acquire(user_key="user-a") > 5
    assert ratelimit.acquire(user_key=None) > 5


def test_it_waits_for_a_slot_or_gives_up(limiter, settings):
    settings.CLOUDFLARE_GLOBAL_RATE = 1
    assert ratelimit.wait_for_slot(user_key=None, max_wait=2.0)
    assert ratelimit.wait_for_slot(user_key=None, max_wait=2.0)  # next second
    ratelimit.block(user_key=None, seconds=60)
    started = time.monotonic()
    assert not ratelimit.wait_for_slot(user_key=None, max_wait=0.5)
    assert time.monotonic() - started < 0.5


def _count_grants(url: str, n: int, queue) -> None:
    import django

    django.setup()
    from django.conf import settings

    settings.CELERY_BROKER_URL = url
    settings.CLOUDFLARE_USER_BUDGET, settings.CLOUDFLARE_GLOBAL_RATE = 20, 10_000
    from connections import ratelimit as rl

    rl._redis_client = None
    queue.put(sum(1 for _ in range(n) if rl.acquire(user_key="shared-user") == 0.0))


@pytest.mark.redis
def test_it_shares_one_budget_between_worker_processes(settings):
    settings.CLOUDFLARE_RATELIMIT_REDIS_URL = ""
    settings.CLOUDFLARE_RATELIMIT_KEY_PREFIX = "ap:rl"
    ratelimit._redis_client = None
    ratelimit.reset()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_count_grants, args=(settings.CELERY_BROKER_URL, 15, queue)) for _ in range(3)]
    for proc in procs:
        proc.start()
    granted = sum(queue.get(timeout=60) for _ in procs)
    for proc in procs:
        proc.join(timeout=30)
    ratelimit.reset()

    assert granted == 20  # 3 processes × 15 requests against one budget of 20
