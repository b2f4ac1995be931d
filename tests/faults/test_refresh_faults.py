"""The refresh engine under faults, with real worker processes, judged by the sandbox's ground truth.

Invariants (security checklist): I1 no grant wrongly revoked; I2 every live grant holds the refresh
token the server considers current (losses inside a kill window are labelled "lost", never
"revoked"); I3 zero refresh-token reuses; I4 every real revocation alerted exactly once; I7 after a
fault heals every due grant is fresh again.
"""

from __future__ import annotations

import shutil
import time

import pytest

from connections.models import Alert, Grant
from connections.tasks import check_grant_task, refresh_grant_task
from tests.faults.conftest import wait_until
from tests.faults.ground_truth import TOKEN_CALLS
from tests.faults.ground_truth import due_grants as _due
from tests.faults.ground_truth import settled as _settled
from tests.faults.ground_truth import sweep as _sweep
from tests.faults.ground_truth import truth as _truth
from tests.sandbox_grants import register_app

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.redis, pytest.mark.sandbox]


def _assert_no_false_revocation(cf_sandbox, app) -> None:
    assert not Grant.objects.filter(app=app, status=Grant.Status.REVOKED).exists()
    assert not Alert.objects.filter(kind=Alert.Kind.REVOKED).exists()
    assert cf_sandbox.state(client_id=app.client_id)["reuse_count"] == 0


def test_it_makes_one_token_call_when_a_refresh_is_enqueued_ten_times_at_once(workers, cf_sandbox, acme):
    app = register_app(cf_sandbox)
    (grant,) = _due(cf_sandbox, app, acme, 1)
    workers.start(concurrency=4)
    # A slow token endpoint keeps the first refresh in flight while the other nine arrive.
    cf_sandbox.set_faults(latency_ms=1500, latency_endpoints=["token"])
    cf_sandbox.reset_counters()

    for _ in range(10):
        refresh_grant_task.delay(grant.pk)

    assert wait_until(lambda: sum(workers.outcomes().values()) >= 10, timeout=40), workers.outcomes()
    truth = _truth(cf_sandbox, app)[grant.cf_user_id]
    grant.refresh_from_db()
    assert cf_sandbox.state()["calls"].get(TOKEN_CALLS, 0) == 1
    assert truth["refresh_count"] == 1 and truth["reuse_count"] == 0
    assert grant.refresh_token_fp == truth["current_refresh_token_sha256"]
    outcomes = workers.outcomes()
    assert outcomes.get("refreshed") == 1
    assert outcomes.get("skipped", 0) + outcomes.get("fresh", 0) == 9
    assert "failed" not in outcomes and "transient" not in outcomes


def test_it_never_calls_a_grant_revoked_after_a_worker_is_killed_mid_refresh(workers, cf_sandbox, acme):
    app = register_app(cf_sandbox)
    grants = _due(cf_sandbox, app, acme, 6)
    first = workers.start(concurrency=4)
    cf_sandbox.set_faults(latency_ms=2500, latency_endpoints=["token"])
    cf_sandbox.reset_counters()
    for grant in grants:
        refresh_grant_task.delay(grant.pk)
    # Kill once four refresh requests are in flight at the sandbox (it rotates after the delay).
    assert wait_until(lambda: cf_sandbox.state()["calls"].get(TOKEN_CALLS, 0) >= 4, timeout=20, interval=0.1)
    workers.kill(first)
    time.sleep(3)  # the sandbox finishes the rotations nobody hears about
    cf_sandbox.clear_faults()

    workers.start(concurrency=4)
    assert wait_until(lambda: _settled(cf_sandbox, app, allow_lost=True), timeout=90, tick=_sweep), workers.log_text()[
        -3000:
    ]

    statuses = list(Grant.objects.filter(app=app).values_list("status", flat=True))
    assert Grant.Status.REVOKED not in statuses
    assert not Alert.objects.filter(kind=Alert.Kind.REVOKED).exists()
    lost = statuses.count(Grant.Status.LOST)
    assert lost <= 4  # only grants whose request was in flight at the kill
    assert Alert.objects.filter(kind=Alert.Kind.LOST).count() == lost
    assert statuses.count(Grant.Status.ACTIVE) >= 2


@pytest.mark.parametrize(
    "storm",
    [
        {"storm_429": True, "retry_after": 2, "storm_429_endpoints": ["token"]},
        {"error_5xx_rate": 1.0, "error_5xx_endpoints": ["token"], "retry_after": 1},
    ],
    ids=["429-storm", "5xx-storm"],
)
def test_it_revokes_nothing_in_a_storm_and_is_fresh_again_after_it(workers, cf_sandbox, acme, storm):
    app = register_app(cf_sandbox)
    _due(cf_sandbox, app, acme, 20)
    workers.start(concurrency=4)
    cf_sandbox.set_faults(**storm)

    wait_until(lambda: False, timeout=8, interval=1, tick=_sweep)  # 8 s of storm, sweeping every second
    during = workers.outcomes()
    cf_sandbox.clear_faults()

    # The storm was felt (others were held back by the Retry-After block on the token endpoint).
    assert during.get("transient", 0) >= 4, during
    assert "refreshed" not in during
    assert wait_until(lambda: _settled(cf_sandbox, app), timeout=60, tick=_sweep), workers.outcomes()
    _assert_no_false_revocation(cf_sandbox, app)
    assert not Grant.objects.filter(app=app, status=Grant.Status.LOST).exists()


def test_it_alerts_exactly_the_grants_revoked_at_cloudflare(workers, cf_sandbox, acme):
    app = register_app(cf_sandbox)
    grants = _due(cf_sandbox, app, acme, 30)
    truth = _truth(cf_sandbox, app)
    revoked = {g.pk for g in grants[::10]}  # 3 of 30
    for grant in grants:
        if grant.pk in revoked:
            cf_sandbox.revoke_grant(truth[grant.cf_user_id]["id"])
    workers.start(concurrency=4)

    # Duplicate triggers on purpose: every refresh enqueued twice, plus the sweep, plus checks.
    for grant in grants:
        refresh_grant_task.delay(grant.pk)
        refresh_grant_task.delay(grant.pk)
    assert wait_until(lambda: _settled(cf_sandbox, app, revoked=revoked), timeout=60, tick=_sweep), workers.outcomes()
    for grant in grants:
        check_grant_task.delay(grant.pk)
    wait_until(lambda: sum(workers.outcomes("check").values()) >= 30, timeout=30)

    alerts = Alert.objects.filter(kind=Alert.Kind.REVOKED)
    assert alerts.count() == 3
    assert {a.grant_id for a in alerts} == revoked
    assert not Alert.objects.filter(kind=Alert.Kind.LOST).exists()
    assert cf_sandbox.state(client_id=app.client_id)["reuse_count"] == 0


def test_it_raises_one_app_alert_and_changes_no_grant_on_invalid_client(workers, cf_sandbox, acme):
    app = register_app(cf_sandbox)
    grants = _due(cf_sandbox, app, acme, 10)
    before = {g.pk: (g.status, g.refresh_token_fp) for g in grants}
    # The secret is rotated at Cloudflare but not in the portal.
    cf_sandbox.register_client(
        client_id=app.client_id,
        client_secret="rotated-elsewhere-0123456789",
        name=app.name,
        redirect_uris=[app.redirect_uri],
        scopes=["offline_access", *app.required_scopes],
        optional_scopes=app.optional_scopes,
    )
    workers.start(concurrency=4)
    cf_sandbox.reset_counters()

    _sweep()
    assert wait_until(lambda: sum(workers.outcomes().values()) >= 10, timeout=30), workers.outcomes()

    assert Alert.objects.filter(kind=Alert.Kind.CLIENT_CONFIG).count() == 1
    assert Alert.objects.filter(kind=Alert.Kind.CLIENT_CONFIG, grant__isnull=True, app=app).count() == 1
    after = {g.pk: (g.status, g.refresh_token_fp) for g in Grant.objects.filter(app=app)}
    assert after == before
    assert all(t["refresh_count"] == 0 and t["status"] == "active" for t in _truth(cf_sandbox, app).values())
    assert set(workers.outcomes()) == {"client_config"}


@pytest.fixture
def broker_of_its_own(private_redis, workers, engine_settings, monkeypatch):
    """This test's workers, its sweeps and the rate budget use the test's own Redis, never the shared one."""
    from agencyportal.celery import app as celery_app
    from connections import ratelimit

    previous = celery_app.conf.broker_url
    workers.env["CELERY_BROKER_URL"] = private_redis.url
    engine_settings.CELERY_BROKER_URL = private_redis.url
    # Celery reads CELERY_BROKER_URL from the environment before its own configuration.
    monkeypatch.setenv("CELERY_BROKER_URL", private_redis.url)
    celery_app.conf.broker_url = private_redis.url
    celery_app._pool, celery_app.amqp._producer_pool, ratelimit._redis_client = None, None, None
    try:
        yield private_redis
    finally:
        celery_app.conf.broker_url = previous
        celery_app._pool, celery_app.amqp._producer_pool, ratelimit._redis_client = None, None, None


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server to run a Redis of its own")
def test_it_refreshes_every_due_grant_after_redis_restarts_under_load(broker_of_its_own, workers, cf_sandbox, acme):
    app = register_app(cf_sandbox)
    _due(cf_sandbox, app, acme, 40)
    workers.start(concurrency=4)
    cf_sandbox.set_faults(latency_ms=300, latency_endpoints=["token"])
    _sweep()
    assert wait_until(lambda: workers.outcomes().get("refreshed", 0) >= 4, timeout=20, interval=0.1), (
        workers.log_text()[-2000:]
    )
    # Queued messages die with the broker (killed, nothing saved): only the database knows what is due.
    # The Redis stopped is the test's own (broker_of_its_own), never the machine's shared one.
    broker_of_its_own.stop()
    time.sleep(2)
    broker_of_its_own.start()
    cf_sandbox.clear_faults()

    assert wait_until(lambda: _settled(cf_sandbox, app), timeout=120, interval=1, tick=_sweep), (
        workers.outcomes(),
        workers.log_text()[-3000:],
    )
    _assert_no_false_revocation(cf_sandbox, app)
