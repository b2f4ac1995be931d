"""Health checks against the real sandbox process: reach map, revocation, missing scope, OAuth off."""

from __future__ import annotations

from unittest.mock import patch

import pytest

from clients.models import CloudflareAccount, Zone
from cloudflare_sandbox.seed import ACME_CORP_ID, ACME_STAGING_ID
from connections import ratelimit
from connections.models import Alert, Grant, GrantEvent
from connections.services.health import CheckOutcome, grant_check
from tests.sandbox_grants import mint_grants, register_app

pytestmark = pytest.mark.sandbox


@pytest.fixture(autouse=True)
def _fresh_limits():
    ratelimit.reset()


@pytest.fixture
def app(cf_sandbox, db):
    return register_app(cf_sandbox)


def _grant(sandbox, app, client, **kwargs):
    (grant,) = mint_grants(sandbox, app=app, client=client, count=1, **kwargs)
    grant.sandbox_grant_id = sandbox.state(client_id=app.client_id)["grants"][-1]["id"]
    return grant


def test_it_maps_the_accounts_and_zones_a_grant_reaches(cf_sandbox, app, acme):
    grant = _grant(cf_sandbox, app, acme)

    assert grant_check(grant_id=grant.pk) == CheckOutcome.HEALTHY

    assert sorted(a.name for a in grant.accounts.all()) == ["Acme Corp", "Acme Staging"]
    assert Zone.objects.filter(account__cf_account_id=ACME_CORP_ID).count() == 3
    assert Zone.objects.filter(account__cf_account_id=ACME_STAGING_ID).count() == 1
    grant.refresh_from_db()
    assert grant.health == Grant.Health.HEALTHY


def test_it_confirms_a_revocation_through_a_refresh(cf_sandbox, app, acme):
    grant = _grant(cf_sandbox, app, acme)
    cf_sandbox.revoke_grant(grant.sandbox_grant_id)

    assert grant_check(grant_id=grant.pk) == CheckOutcome.REVOKED

    grant.refresh_from_db()
    assert grant.status == Grant.Status.REVOKED
    assert Alert.objects.filter(grant=grant, kind="revoked").count() == 1
    assert cf_sandbox.state()["calls"].get("POST /oauth2/token", 0) >= 1


def test_it_reports_a_missing_scope_without_calling_the_grant_revoked(cf_sandbox, app, acme):
    grant = _grant(cf_sandbox, app, acme, scopes=["offline_access", "user-details.read", "zone.read", "dns.read"])

    assert grant_check(grant_id=grant.pk) == CheckOutcome.DEGRADED

    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE and grant.health == Grant.Health.DEGRADED
    assert Alert.objects.filter(grant=grant, kind="scope_missing").count() == 1
    assert not Alert.objects.filter(kind="revoked").exists()
    truth = cf_sandbox.grant(grant.sandbox_grant_id)
    assert truth["status"] == "active" and truth["current_refresh_token_sha256"] == grant.refresh_token_fp


def test_it_reports_an_account_whose_admin_switched_off_oauth_apps(cf_sandbox, app, acme):
    grant = _grant(cf_sandbox, app, acme)
    grant_check(grant_id=grant.pk)
    cf_sandbox.set_account_oauth_access(ACME_STAGING_ID, False)
    try:
        assert grant_check(grant_id=grant.pk, force=True) == CheckOutcome.DEGRADED
    finally:
        cf_sandbox.set_account_oauth_access(ACME_STAGING_ID, True)

    assert CloudflareAccount.objects.get(cf_account_id=ACME_STAGING_ID).oauth_access_enabled is False
    assert GrantEvent.objects.filter(grant=grant, kind="oauth_access_disabled").count() == 1
    assert Alert.objects.filter(grant=grant, kind="health_failing").count() == 1


def test_it_stays_healthy_through_an_api_outage(cf_sandbox, app, acme):
    grant = _grant(cf_sandbox, app, acme)
    cf_sandbox.set_faults(error_5xx_rate=1.0, error_5xx_endpoints=["api"])

    assert grant_check(grant_id=grant.pk) == CheckOutcome.TRANSIENT

    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE
    assert not Alert.objects.exists()


def test_a_check_that_finds_nothing_new_rewrites_no_account_or_zone_row(cf_sandbox, app, acme):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    grant = _grant(cf_sandbox, app, acme)
    assert grant_check(grant_id=grant.pk) == CheckOutcome.HEALTHY
    seen = dict(Zone.objects.values_list("cf_zone_id", "last_seen_at"))

    with CaptureQueriesContext(connection) as ctx:
        assert grant_check(grant_id=grant.pk, force=True) == CheckOutcome.HEALTHY
    writes = [
        q["sql"]
        for q in ctx.captured_queries
        if q["sql"].startswith(("UPDATE", "INSERT"))
        and ("clients_zone" in q["sql"] or "clients_cloudflareaccount" in q["sql"])
    ]
    assert writes == []
    assert dict(Zone.objects.values_list("cf_zone_id", "last_seen_at")) == seen

    # A renamed zone is written, and only that one.
    zone = Zone.objects.filter(account__cf_account_id=ACME_CORP_ID).first()
    Zone.objects.filter(pk=zone.pk).update(name="renamed-locally.example")
    with CaptureQueriesContext(connection) as ctx:
        assert grant_check(grant_id=grant.pk, force=True) == CheckOutcome.HEALTHY
    zone_writes = [
        q["sql"] for q in ctx.captured_queries if q["sql"].startswith("UPDATE") and "clients_zone" in q["sql"]
    ]
    assert len(zone_writes) == 1
    zone.refresh_from_db()
    assert zone.name != "renamed-locally.example"


def test_a_routine_re_check_reads_once_per_list_and_writes_only_the_grant_row(cf_sandbox, app, acme):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    grant = _grant(cf_sandbox, app, acme)
    assert grant_check(grant_id=grant.pk) == CheckOutcome.HEALTHY

    with CaptureQueriesContext(connection) as ctx:
        assert grant_check(grant_id=grant.pk, force=True) == CheckOutcome.HEALTHY
    statements = [q["sql"] for q in ctx.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    # The grant (with its app and open alerts), its accounts, the zones of its two accounts, and
    # the one UPDATE of the grant's check fields: no transaction, no alert UPDATE.
    assert len(statements) == 4, statements
    assert [sql for sql in statements if sql.startswith(("UPDATE", "INSERT", "DELETE"))] == [
        next(sql for sql in statements if sql.startswith('UPDATE "connections_grant"'))
    ]


def test_a_re_check_still_closes_an_open_health_alert(cf_sandbox, app, acme):
    from connections.services.events import alert_open

    grant = _grant(cf_sandbox, app, acme)
    assert grant_check(grant_id=grant.pk) == CheckOutcome.HEALTHY
    alert_open(kind=Alert.Kind.HEALTH_FAILING, grant=grant, message="Account refuses OAuth apps.")

    assert grant_check(grant_id=grant.pk, force=True) == CheckOutcome.HEALTHY

    assert not Alert.objects.filter(grant=grant, kind=Alert.Kind.HEALTH_FAILING, resolved_at__isnull=True).exists()
    assert Alert.objects.filter(grant=grant, kind=Alert.Kind.RECOVERED).count() == 1


@pytest.fixture
def check_pool_connections_closed(settings):
    """The check threads keep their database connections across tasks: close them after the test."""
    import threading

    from django.db import connection

    from connections.services import health

    settings.GRANT_CHECK_BATCH = 4
    yield
    if not health._check_threads.size:
        return  # SQLite: the checks ran in line
    barrier = threading.Barrier(health._check_threads.size)

    def close() -> None:
        connection.close()
        barrier.wait(timeout=10)  # one job per thread: each waits until every thread has closed

    for future in [health._check_threads.get().submit(close) for _ in range(health._check_threads.size)]:
        future.result(timeout=15)


@pytest.mark.django_db(transaction=True)
def test_a_batch_of_checks_maps_every_grant_at_once(cf_sandbox, app, acme, check_pool_connections_closed):
    from connections.services.health import grants_check

    grants = [_grant(cf_sandbox, app, acme) for _ in range(3)]

    outcomes = grants_check(grant_ids=[g.pk for g in grants])

    assert outcomes == {g.pk: CheckOutcome.HEALTHY for g in grants}
    for grant in grants:
        assert sorted(a.name for a in grant.accounts.all()) == ["Acme Corp", "Acme Staging"]
        grant.refresh_from_db()
        assert grant.health == Grant.Health.HEALTHY and grant.last_checked_at is not None
    assert Zone.objects.filter(account__cf_account_id=ACME_CORP_ID).count() == 3


@pytest.mark.postgres  # on SQLite (one writer at a time) a batch's checks run one after another
@pytest.mark.django_db(transaction=True)
def test_a_routine_re_check_batch_reads_its_grants_reach_once_and_writes_their_rows_in_one_statement(
    cf_sandbox, app, acme, check_pool_connections_closed
):
    import threading

    from django.db.backends import utils

    from connections.services.health import grants_check

    grants = [_grant(cf_sandbox, app, acme) for _ in range(3)]
    assert set(grants_check(grant_ids=[g.pk for g in grants]).values()) == {CheckOutcome.HEALTHY}
    Grant.objects.filter(pk__in=[g.pk for g in grants]).update(last_checked_at=None)
    real = utils.CursorWrapper._execute
    seen: list[tuple[bool, str]] = []
    lock = threading.Lock()

    def spy(self, sql, params, *rest):
        with lock:
            seen.append((threading.current_thread() is threading.main_thread(), sql))
        return real(self, sql, params, *rest)

    with patch.object(utils.CursorWrapper, "_execute", spy):
        assert grants_check(grant_ids=[g.pk for g in grants]) == {g.pk: CheckOutcome.HEALTHY for g in grants}

    task = [sql for in_task, sql in seen if in_task]
    checks = [sql for in_task, sql in seen if not in_task]
    # The task thread: the grants, their links, their clients' accounts, those accounts' zones,
    # then the three grant rows in one UPDATE.
    assert len(task) == 5 and all(sql.startswith("SELECT") for sql in task[:4]), task
    assert ['FROM "clients_zone"' in sql for sql in task].count(True) == 1
    assert task[4].startswith('UPDATE "connections_grant" AS g SET health')
    # The checks themselves: no statement at all (no account, zone, alert or grant write).
    assert checks == []
    for grant in grants:
        grant.refresh_from_db()
        assert grant.health == Grant.Health.HEALTHY and grant.last_error == ""
        assert grant.last_checked_at is not None and grant.next_check_at > grant.last_checked_at
