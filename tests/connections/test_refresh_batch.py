"""Many grants refreshed in one task: one claim, one read, concurrent calls, each write fenced.

Against the real sandbox process and its ground truth; the database failure of the spool case is
injected at the seam of the fenced write (`refresh._on_success`), as in test_refresh_spool.py.
"""

from __future__ import annotations

from datetime import timedelta
from unittest.mock import patch

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from connections import cloudflare, ratelimit
from connections.models import Grant
from connections.services import token_spool
from connections.services.refresh import Outcome, grants_refresh
from tests.sandbox_grants import matches_ground_truth, mint_grants, register_app

pytestmark = pytest.mark.sandbox


@pytest.fixture(autouse=True)
def _isolated(settings, tmp_path):
    ratelimit.reset()
    settings.VAR_DIR = tmp_path
    settings.CLOUDFLARE_RATELIMIT_KEY_PREFIX = f"test-batch-{tmp_path.name}"
    settings.GRANT_WRITE_RETRY_SECONDS = 1
    settings.GRANT_REFRESH_BATCH = 8
    yield
    for key in token_spool._pending():
        token_spool._discard(key)


@pytest.fixture
def app(cf_sandbox, db):
    return register_app(cf_sandbox)


def _due_grants(sandbox, app, client, count: int) -> list[Grant]:
    grants = mint_grants(sandbox, app=app, client=client, count=count)
    Grant.objects.filter(pk__in=[g.pk for g in grants]).update(
        authorized_at=timezone.now() - timedelta(hours=1), access_expires_at=timezone.now() + timedelta(seconds=5)
    )
    truths = {t["current_refresh_token_sha256"]: t for t in sandbox.state(client_id=app.client_id)["grants"]}
    for grant in grants:
        grant.refresh_from_db()
        grant.sandbox_grant_id = truths[grant.refresh_token_fp]["id"]
    return grants


def test_a_batch_refreshes_every_grant_with_exactly_one_token_call_each(cf_sandbox, app, acme):
    grants = _due_grants(cf_sandbox, app, acme, 6)
    cf_sandbox.reset_counters()

    outcomes = grants_refresh(grant_ids=[g.pk for g in grants])

    assert outcomes == {g.pk: Outcome.REFRESHED for g in grants}
    assert cf_sandbox.calls().get("POST /oauth2/token", 0) == 6
    for grant in grants:
        grant.refresh_from_db()
        truth = cf_sandbox.grant(grant.sandbox_grant_id)
        assert matches_ground_truth(grant, truth)
        assert truth["refresh_count"] == 1 and truth["reuse_count"] == 0
        assert grant.refresh_lease_until is None and grant.refresh_generation == 1
        assert grant.refresh_history[0]["outcome"] == "refreshed"


def test_a_batch_costs_one_claim_that_reads_its_rows_its_app_once_and_at_most_one_write_per_grant(
    cf_sandbox, app, acme, settings
):
    from agencyportal.models import DailyFleetStats

    settings.FLEET_COUNT_FLUSH_SECONDS = 3600  # the dashboard's counters: written later, per process
    DailyFleetStats.flush_counts()  # (and just written: not due again during this test)
    grants = _due_grants(cf_sandbox, app, acme, 6)
    Grant.objects.filter(pk__in=[g.pk for g in grants]).update(refresh_history=[{"at": "earlier", "outcome": "x"}])

    with CaptureQueriesContext(connection) as queries:
        assert set(grants_refresh(grant_ids=[g.pk for g in grants]).values()) == {Outcome.REFRESHED}

    statements = [q["sql"] for q in queries.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    writes = [sql for sql in statements[1:] if sql.startswith("UPDATE") and "refresh_history" in sql]
    # The claim that returns the rows it took, the app and its open-alert flag (once for the task),
    # the fenced writes (answers that arrive together share one statement on PostgreSQL): nothing else.
    assert 1 <= len(writes) <= 6
    assert len(statements) == 3 + len(writes), statements
    assert statements[0].startswith('UPDATE "connections_grant" SET "refresh_lease_until"')
    assert "RETURNING" in statements[0]
    assert sum('FROM "connections_oauthapp"' in sql for sql in statements) == 1
    assert sum('FROM "connections_alert"' in sql for sql in statements) == 1
    for grant in grants:
        grant.refresh_from_db()
        assert matches_ground_truth(grant, cf_sandbox.grant(grant.sandbox_grant_id))
        assert grant.refresh_count == 1 and grant.refresh_generation == 1 and grant.refresh_lease_until is None
        assert [e["outcome"] for e in grant.refresh_history] == ["refreshed", "x"]
        assert grant.next_refresh_at > timezone.now() + timedelta(minutes=30)


def test_answers_written_together_are_each_fenced_on_their_own_row(cf_sandbox, app, acme, settings):
    from connections.services import refresh

    settings.GRANT_REFRESH_BATCH = 3
    grants = _due_grants(cf_sandbox, app, acme, 3)
    now = timezone.now()
    answers = [
        (g, refresh._Sent(sent_at=now, token=cloudflare.refresh(app=g.app, refresh_token=g.refresh_token)))
        for g in Grant.objects.select_related("app").filter(pk__in=[g.pk for g in grants]).order_by("pk")
    ]
    for grant, _ in answers:
        grant.app_config_alert_open = False
    moved = answers[1][0]
    Grant.objects.filter(pk=moved.pk).update(refresh_generation=5)  # someone wrote it without the lease

    outcomes = refresh._tokens_write_together(answers)

    assert outcomes == {
        answers[0][0].pk: Outcome.REFRESHED,
        moved.pk: Outcome.CONFLICT,
        answers[2][0].pk: Outcome.REFRESHED,
    }
    for grant, sent in answers:
        grant.refresh_from_db()
        held = grant.refresh_token == sent.token.refresh_token
        assert held is (grant.pk != moved.pk)


def test_a_batch_leaves_a_grant_that_another_worker_holds_alone(cf_sandbox, app, acme):
    held, free = _due_grants(cf_sandbox, app, acme, 2)
    lease = timezone.now() + timedelta(seconds=60)
    Grant.objects.filter(pk=held.pk).update(refresh_lease_until=lease)
    cf_sandbox.reset_counters()

    outcomes = grants_refresh(grant_ids=[held.pk, free.pk])

    assert outcomes == {held.pk: Outcome.SKIPPED, free.pk: Outcome.REFRESHED}
    assert cf_sandbox.calls().get("POST /oauth2/token", 0) == 1
    held.refresh_from_db()
    assert held.refresh_lease_until == lease and held.refresh_generation == 0
    assert cf_sandbox.grant(held.sandbox_grant_id)["refresh_count"] == 0


def test_a_batch_hands_an_unanswered_refresh_to_its_own_task_without_sending_it(cf_sandbox, app, acme):
    uncertain, routine = _due_grants(cf_sandbox, app, acme, 2)
    Grant.objects.filter(pk=uncertain.pk).update(refresh_uncertain_since=timezone.now() - timedelta(minutes=5))
    cf_sandbox.reset_counters()

    with patch("connections.tasks.refresh_grant_task.delay") as delay:
        outcomes = grants_refresh(grant_ids=[uncertain.pk, routine.pk])

    assert outcomes == {uncertain.pk: Outcome.AWAITING_EVIDENCE, routine.pk: Outcome.REFRESHED}
    delay.assert_called_once_with(uncertain.pk)
    assert cf_sandbox.grant(uncertain.sandbox_grant_id)["refresh_count"] == 0
    uncertain.refresh_from_db()
    # Released (its own task claims it) and still marked: the evidence rules decide there.
    assert uncertain.refresh_lease_until is None and uncertain.refresh_uncertain_since is not None


def test_a_batch_revokes_only_the_grant_cloudflare_refuses(cf_sandbox, app, acme):
    revoked, kept = _due_grants(cf_sandbox, app, acme, 2)
    cf_sandbox.revoke_grant(revoked.sandbox_grant_id)

    outcomes = grants_refresh(grant_ids=[revoked.pk, kept.pk])

    assert outcomes == {revoked.pk: Outcome.REVOKED, kept.pk: Outcome.REFRESHED}
    revoked.refresh_from_db()
    kept.refresh_from_db()
    assert revoked.status == Grant.Status.REVOKED and kept.status == Grant.Status.ACTIVE
    assert matches_ground_truth(kept, cf_sandbox.grant(kept.sandbox_grant_id))


def test_a_batch_sends_nothing_while_its_lease_is_shorter_than_a_whole_call(cf_sandbox, app, acme):
    grants = _due_grants(cf_sandbox, app, acme, 3)
    cf_sandbox.reset_counters()

    # Every lease written (claim and extension) ends one second ahead: never enough for a call.
    with patch("connections.services.refresh.lease_seconds", return_value=1.0):
        outcomes = grants_refresh(grant_ids=[g.pk for g in grants])

    assert set(outcomes.values()) == {Outcome.DEFERRED}
    assert cf_sandbox.calls().get("POST /oauth2/token", 0) == 0
    assert not Grant.objects.filter(pk__in=[g.pk for g in grants], refresh_lease_until__isnull=False).exists()
    assert not Grant.objects.filter(pk__in=[g.pk for g in grants], refresh_uncertain_since__isnull=False).exists()


def test_a_batch_spools_every_answer_when_the_database_stays_down_for_the_writes(oauth_app, acme):
    from tests import factories

    grants = [
        factories.GrantFactory(
            app=oauth_app,
            client=acme,
            access_expires_at=timezone.now() + timedelta(seconds=20),
            next_refresh_at=timezone.now() - timedelta(seconds=1),
            authorized_at=timezone.now() - timedelta(hours=1),
        )
        for _ in range(3)
    ]
    answers = iter(
        cloudflare.TokenResponse(
            access_token=f"cfoat_batch_access_{n:020d}", refresh_token=f"cfort_batch_refresh_{n:020d}", expires_in=3600
        )
        for n in range(3)
    )
    with (
        patch("connections.cloudflare.refresh", side_effect=lambda **_: next(answers)),
        patch("connections.services.refresh._on_success", side_effect=OperationalError("could not connect")),
        patch(
            "connections.services.refresh._routine_successes_write", side_effect=OperationalError("could not connect")
        ),
    ):
        outcomes = grants_refresh(grant_ids=[g.pk for g in grants])

    assert set(outcomes.values()) == {Outcome.SPOOLED}
    spooled = {record.grant_id: record.refresh_token for record in token_spool._pending().values()}
    assert set(spooled) == {g.pk for g in grants}
    assert len(set(spooled.values())) == 3  # each grant's own new token, none dropped


def test_a_batch_stopped_while_writing_spools_every_answer_it_holds(oauth_app, acme):
    from concurrent.futures import wait

    from celery.exceptions import SoftTimeLimitExceeded

    from tests import factories

    grants = [
        factories.GrantFactory(
            app=oauth_app,
            client=acme,
            access_expires_at=timezone.now() + timedelta(seconds=20),
            next_refresh_at=timezone.now() - timedelta(seconds=1),
            authorized_at=timezone.now() - timedelta(hours=1),
        )
        for _ in range(3)
    ]
    answers = iter(
        cloudflare.TokenResponse(
            access_token=f"cfoat_stopped_access_{n:020d}",
            refresh_token=f"cfort_stopped_refresh_{n:020d}",
            expires_in=3600,
        )
        for n in range(3)
    )
    with (
        patch("connections.cloudflare.refresh", side_effect=lambda **_: next(answers)),
        # The three answers are in hand together when the stop comes (during their shared write).
        patch("connections.services.refresh.wait", side_effect=lambda futures, **_: (set(wait(futures)[0]), set())),
        patch("connections.services.refresh._on_success", side_effect=SoftTimeLimitExceeded()),
        patch("connections.services.refresh._routine_successes_write", side_effect=SoftTimeLimitExceeded()),
        pytest.raises(SoftTimeLimitExceeded),
    ):
        grants_refresh(grant_ids=[g.pk for g in grants])

    spooled = {record.grant_id: record.refresh_token for record in token_spool._pending().values()}
    assert set(spooled) == {g.pk for g in grants}
    assert len(set(spooled.values())) == 3


def _tracking_calls(slow_refresh_tokens: set[str] = frozenset(), slow_seconds: float = 0.0):
    """Wrap the real token call (to the sandbox) to record how many are in flight at once."""
    import threading
    import time

    real = cloudflare.refresh
    state = {"in_flight": 0, "peak": 0, "finished": {}}
    lock = threading.Lock()

    def call(**kwargs):
        with lock:
            state["in_flight"] += 1
            state["peak"] = max(state["peak"], state["in_flight"])
        try:
            if kwargs["refresh_token"] in slow_refresh_tokens:
                time.sleep(slow_seconds)
            return real(**kwargs)
        finally:
            with lock:
                state["in_flight"] -= 1
                state["finished"][kwargs["refresh_token"]] = time.monotonic()

    return call, state


def test_a_task_keeps_at_most_its_window_in_flight_and_refreshes_its_whole_message(cf_sandbox, app, acme, settings):
    settings.GRANT_REFRESH_BATCH = 3
    grants = _due_grants(cf_sandbox, app, acme, 10)
    call, state = _tracking_calls()
    cf_sandbox.reset_counters()

    with patch("connections.cloudflare.refresh", side_effect=call):
        outcomes = grants_refresh(grant_ids=[g.pk for g in grants])

    assert outcomes == {g.pk: Outcome.REFRESHED for g in grants}
    assert cf_sandbox.calls().get("POST /oauth2/token", 0) == 10
    assert 1 <= state["peak"] <= 3
    for grant in grants:
        grant.refresh_from_db()
        truth = cf_sandbox.grant(grant.sandbox_grant_id)
        assert matches_ground_truth(grant, truth)
        assert truth["refresh_count"] == 1 and truth["reuse_count"] == 0
        assert grant.refresh_lease_until is None


def test_a_slow_call_does_not_hold_back_the_rest_of_the_message(cf_sandbox, app, acme, settings):
    settings.GRANT_REFRESH_BATCH = 2
    grants = _due_grants(cf_sandbox, app, acme, 6)
    slow = grants[0]
    call, state = _tracking_calls({slow.refresh_token}, slow_seconds=1.5)

    with patch("connections.cloudflare.refresh", side_effect=call):
        outcomes = grants_refresh(grant_ids=[g.pk for g in grants])

    assert outcomes == {g.pk: Outcome.REFRESHED for g in grants}
    # The other five went out through the second place while the first call was still running.
    slow_done = state["finished"][slow.refresh_token]
    others_done = [at for token, at in state["finished"].items() if token != slow.refresh_token]
    assert len(others_done) == 5 and max(others_done) < slow_done
    assert state["peak"] == 2


def test_a_task_past_its_claim_period_hands_the_rest_of_its_message_to_the_next_sweep(cf_sandbox, app, acme, settings):
    grants = _due_grants(cf_sandbox, app, acme, 4)
    # As the sweep leaves them: due again at its re-dispatch mark.
    Grant.objects.filter(pk__in=[g.pk for g in grants]).update(
        next_refresh_at=timezone.now() + timedelta(seconds=settings.GRANT_DISPATCH_RETRY)
    )
    cf_sandbox.reset_counters()

    with patch("connections.services.refresh._claim_period", return_value=0.0):
        outcomes = grants_refresh(grant_ids=[g.pk for g in grants])

    assert outcomes == {}
    assert cf_sandbox.calls().get("POST /oauth2/token", 0) == 0
    after = timezone.now()
    for grant in grants:
        grant.refresh_from_db()
        assert grant.next_refresh_at <= after and grant.refresh_lease_until is None
        assert grant.refresh_generation == 0 and grant.refresh_uncertain_since is None


def test_a_claim_whose_answer_is_lost_is_given_back_and_the_calls_in_flight_still_land(cf_sandbox, app, acme, settings):
    from connections.services import refresh

    settings.GRANT_REFRESH_BATCH = 2
    grants = _due_grants(cf_sandbox, app, acme, 4)
    real = refresh.grants_claimed_for_refresh
    claims = []

    def claim(**kwargs):
        rows = real(**kwargs)  # committed
        claims.append([g.pk for g in rows])
        if len(claims) == 2:
            raise OperationalError("server closed the connection unexpectedly")
        return rows

    cf_sandbox.reset_counters()
    with patch("connections.services.refresh.grants_claimed_for_refresh", side_effect=claim):
        outcomes = grants_refresh(grant_ids=[g.pk for g in grants])

    first, unheard = claims
    assert outcomes == dict.fromkeys(first, Outcome.REFRESHED)
    assert cf_sandbox.calls().get("POST /oauth2/token", 0) == len(first)
    for grant in Grant.objects.filter(pk__in=unheard):
        # Taken without this task hearing it, then given back: not mistaken for a dead holder's.
        assert grant.refresh_lease_until is None and grant.refresh_uncertain_since is None
        assert grant.refresh_generation == 0 and grant.next_refresh_at <= timezone.now()
