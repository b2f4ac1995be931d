"""The refresh engine: single-flight claim, fenced write, classification of every failure.

Cloudflare is mocked only at the HTTP seam (`connections.cloudflare.refresh`); the proofs against
the real sandbox process are in test_refresh_sandbox.py and tests/faults/.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from unittest.mock import patch

import pytest
from django.utils import timezone

from connections import cloudflare, crypto, ratelimit
from connections.models import Alert, Grant, GrantEvent
from connections.services.alerts import alert_deliver
from connections.services.refresh import (
    Outcome,
    grant_refresh,
    grants_dispatch_due_refreshes,
    refresh_due_at,
    refresh_window,
    retry_delay,
)
from tests import factories


@pytest.fixture(autouse=True)
def _fresh_limits():
    ratelimit.reset()


@pytest.fixture
def due_grant(oauth_app, acme):
    """An active grant whose access token expires in 20 s (inside its refresh window)."""
    return factories.GrantFactory(
        app=oauth_app,
        client=acme,
        access_expires_at=timezone.now() + timedelta(seconds=20),
        next_refresh_at=timezone.now() - timedelta(seconds=1),
        authorized_at=timezone.now() - timedelta(hours=1),
    )


@pytest.fixture
def mock_refresh():
    with patch("connections.cloudflare.refresh", autospec=True) as mock:
        yield mock


def _token(refresh: str | None = "cfort_new_refresh_value_0123456789", scopes=None, expires_in=3600):
    return cloudflare.TokenResponse(
        access_token="cfoat_new_access_value_0123456789",
        refresh_token=refresh or "",
        expires_in=expires_in,
        scopes=scopes or [],
    )


def test_it_rotates_both_tokens_in_one_fenced_write(due_grant, mock_refresh):
    old_refresh = due_grant.refresh_token
    mock_refresh.return_value = _token()

    assert grant_refresh(grant_id=due_grant.pk) == Outcome.REFRESHED

    mock_refresh.assert_called_once()
    assert mock_refresh.call_args.kwargs["refresh_token"] == old_refresh
    due_grant.refresh_from_db()
    assert due_grant.access_token == "cfoat_new_access_value_0123456789"
    assert due_grant.refresh_token == "cfort_new_refresh_value_0123456789"
    assert due_grant.refresh_token_fp == crypto.fingerprint("cfort_new_refresh_value_0123456789")
    assert due_grant.access_token_fp == crypto.fingerprint("cfoat_new_access_value_0123456789")
    assert due_grant.refresh_generation == 1
    assert due_grant.refresh_lease_until is None
    assert due_grant.last_refreshed_at is not None
    # Due again one margin (<= 900 s + 60 s jitter) before the new expiry.
    assert due_grant.access_expires_at - timedelta(seconds=961) <= due_grant.next_refresh_at
    assert due_grant.next_refresh_at <= due_grant.access_expires_at - timedelta(seconds=899)


def test_it_stores_tokens_encrypted_at_rest(due_grant, mock_refresh):
    from django.db import connection

    mock_refresh.return_value = _token()
    grant_refresh(grant_id=due_grant.pk)
    with connection.cursor() as cursor:
        cursor.execute("SELECT access_token, refresh_token FROM connections_grant WHERE id = %s", [due_grant.pk])
        raw = cursor.fetchone()
    assert not any("cfo" in value for value in raw)


def test_it_keeps_the_old_refresh_token_when_the_response_has_none(due_grant, mock_refresh):
    old_refresh = due_grant.refresh_token
    mock_refresh.return_value = _token(refresh=None)

    assert grant_refresh(grant_id=due_grant.pk) == Outcome.REFRESHED

    due_grant.refresh_from_db()
    assert due_grant.refresh_token == old_refresh
    assert due_grant.access_token == "cfoat_new_access_value_0123456789"


def test_it_makes_no_call_when_the_token_is_still_fresh(oauth_app, acme, mock_refresh):
    grant = factories.GrantFactory(app=oauth_app, client=acme, access_expires_at=timezone.now() + timedelta(hours=1))

    assert grant_refresh(grant_id=grant.pk) == Outcome.FRESH

    mock_refresh.assert_not_called()
    grant.refresh_from_db()
    assert grant.refresh_lease_until is None


def test_it_skips_without_a_call_when_another_worker_holds_the_lease(due_grant, mock_refresh):
    Grant.objects.filter(pk=due_grant.pk).update(refresh_lease_until=timezone.now() + timedelta(seconds=60))

    assert grant_refresh(grant_id=due_grant.pk) == Outcome.SKIPPED

    mock_refresh.assert_not_called()
    due_grant.refresh_from_db()
    assert due_grant.consecutive_failures == 0 and due_grant.last_error == ""


def test_it_sends_nothing_when_spooled_tokens_appear_after_its_claim(due_grant, mock_refresh):
    # An earlier holder's tokens reach the spool between the pre-claim apply and the claim: the
    # stored refresh token is a rotated one. The new holder stands back instead of presenting it.
    with patch("connections.services.token_spool.spool_pending", return_value=True):
        assert grant_refresh(grant_id=due_grant.pk) == Outcome.DEFERRED
    mock_refresh.assert_not_called()
    due_grant.refresh_from_db()
    assert due_grant.refresh_lease_until is None
    assert due_grant.refresh_generation == 0


def test_it_does_not_send_when_the_lease_cannot_outlive_the_call(due_grant, mock_refresh, settings):
    # The lease is never shorter than the whole call plus the margin, so a rate-limit wait that ate
    # most of it makes the holder extend it first; where it cannot, nothing is sent.
    settings.GRANT_REFRESH_LEASE = 1
    with (
        patch("connections.services.refresh.LeaseHeartbeat.extend", return_value=False),
        patch("connections.services.refresh.call_budget", side_effect=[0.0, 30.0, 30.0]),
    ):
        assert grant_refresh(grant_id=due_grant.pk) == Outcome.DEFERRED
    mock_refresh.assert_not_called()
    due_grant.refresh_from_db()
    assert due_grant.refresh_lease_until is None


def test_its_lease_outlives_the_whole_token_call(settings):
    from connections.services.refresh import lease_seconds

    settings.GRANT_REFRESH_LEASE = 30
    settings.CLOUDFLARE_CONNECT_TIMEOUT = 5
    settings.CLOUDFLARE_TOKEN_READ_TIMEOUT = 30
    settings.GRANT_LEASE_MARGIN = 5
    assert lease_seconds() == 40
    settings.CLOUDFLARE_TOKEN_READ_TIMEOUT = 10
    assert lease_seconds() == 30


def test_it_refreshes_a_fresh_token_when_forced(oauth_app, acme, mock_refresh):
    grant = factories.GrantFactory(app=oauth_app, client=acme, access_expires_at=timezone.now() + timedelta(hours=1))
    mock_refresh.return_value = _token()

    assert grant_refresh(grant_id=grant.pk, force=True) == Outcome.REFRESHED
    mock_refresh.assert_called_once()


@pytest.mark.parametrize("status", ["disconnecting", "needs_reconsent"])
def test_it_never_refreshes_a_grant_that_is_not_active_or_failing(oauth_app, acme, mock_refresh, status):
    grant = factories.GrantFactory(
        app=oauth_app, client=acme, status=status, access_expires_at=timezone.now() + timedelta(seconds=5)
    )

    assert grant_refresh(grant_id=grant.pk) == Outcome.NOT_LIVE
    mock_refresh.assert_not_called()


@pytest.mark.parametrize("http_status", [400, 401])
def test_it_marks_revoked_on_invalid_grant_with_the_current_token(due_grant, mock_refresh, http_status):
    mock_refresh.side_effect = cloudflare.InvalidGrant("invalid_grant", "token revoked", status=http_status)

    assert grant_refresh(grant_id=due_grant.pk) == Outcome.REVOKED

    due_grant.refresh_from_db()
    assert due_grant.status == Grant.Status.REVOKED
    assert due_grant.end_reason == Grant.EndReason.USER_REVOKED
    assert due_grant.ended_at is not None
    assert due_grant.access_token == "" and due_grant.refresh_token == ""
    assert due_grant.refresh_token_fp == "" and due_grant.next_refresh_at is None
    assert list(Alert.objects.filter(grant=due_grant).values_list("kind", flat=True)) == ["revoked"]
    assert GrantEvent.objects.filter(grant=due_grant, kind="revoked").count() == 1


def test_it_alerts_a_revocation_exactly_once_however_often_it_is_seen(due_grant, mock_refresh):
    mock_refresh.side_effect = cloudflare.InvalidGrant("invalid_grant", status=400)

    for _ in range(5):
        grant_refresh(grant_id=due_grant.pk)

    assert mock_refresh.call_count == 1  # the revoked grant is no longer refreshable
    assert Alert.objects.filter(grant=due_grant, kind="revoked").count() == 1


def test_it_marks_uncertain_on_a_read_timeout_and_does_not_retry(due_grant, mock_refresh):
    mock_refresh.side_effect = cloudflare.UncertainOutcome("token (refresh_token): no answer within 15s")

    assert grant_refresh(grant_id=due_grant.pk) == Outcome.UNCERTAIN

    assert mock_refresh.call_count == 1
    due_grant.refresh_from_db()
    assert due_grant.status == Grant.Status.ACTIVE
    assert due_grant.refresh_uncertain_since is not None
    assert due_grant.refresh_lease_until is None
    assert due_grant.next_refresh_at > timezone.now()
    assert GrantEvent.objects.filter(grant=due_grant, kind="refresh_uncertain").count() == 1


@pytest.fixture
def settled(settings):
    """An unanswered refresh may be resolved at once (no wait for it to finish at Cloudflare)."""
    settings.GRANT_UNCERTAIN_SETTLE = 0
    return settings


@pytest.fixture
def mock_probe():
    with patch("connections.cloudflare.access_token_accepted", autospec=True) as mock:
        yield mock


def _unanswered(grant, mock_refresh):
    mock_refresh.side_effect = cloudflare.UncertainOutcome("no answer")
    assert grant_refresh(grant_id=grant.pk) == Outcome.UNCERTAIN
    mock_refresh.reset_mock()
    mock_refresh.side_effect = None


def test_it_sends_nothing_while_an_unanswered_refresh_may_still_run_at_cloudflare(due_grant, mock_refresh, mock_probe):
    _unanswered(due_grant, mock_refresh)

    assert grant_refresh(grant_id=due_grant.pk, force=True) == Outcome.AWAITING_EVIDENCE

    mock_refresh.assert_not_called()
    mock_probe.assert_not_called()
    due_grant.refresh_from_db()
    assert due_grant.refresh_lease_until is None
    assert due_grant.next_refresh_at >= due_grant.refresh_uncertain_since + timedelta(seconds=70)


def test_it_labels_the_grant_lost_without_a_second_refresh_when_the_old_access_token_is_refused(
    due_grant, mock_refresh, mock_probe, settled
):
    old_access = due_grant.access_token
    _unanswered(due_grant, mock_refresh)
    mock_probe.return_value = False

    assert grant_refresh(grant_id=due_grant.pk) == Outcome.LOST

    mock_refresh.assert_not_called()  # the rotated refresh token is never presented again
    assert mock_probe.call_args.kwargs["access_token"] == old_access
    due_grant.refresh_from_db()
    assert due_grant.status == Grant.Status.LOST
    assert due_grant.end_reason == Grant.EndReason.REFRESH_TOKEN_LOST
    assert due_grant.refresh_token == "" and due_grant.access_token == ""
    assert list(Alert.objects.filter(grant=due_grant).values_list("kind", flat=True)) == ["lost"]
    assert GrantEvent.objects.get(grant=due_grant, kind="lost").detail["evidence"] == "rotated"
    assert not GrantEvent.objects.filter(grant=due_grant, kind="revoked").exists()


def test_it_refreshes_once_the_old_access_token_proves_the_refresh_did_not_happen(
    due_grant, mock_refresh, mock_probe, settled
):
    old_refresh = due_grant.refresh_token
    _unanswered(due_grant, mock_refresh)
    mock_probe.return_value = True
    mock_refresh.return_value = _token()

    assert grant_refresh(grant_id=due_grant.pk) == Outcome.REFRESHED

    assert mock_refresh.call_args.kwargs["refresh_token"] == old_refresh
    due_grant.refresh_from_db()
    assert due_grant.refresh_uncertain_since is None and due_grant.consecutive_failures == 0
    assert due_grant.refresh_token == "cfort_new_refresh_value_0123456789"


def test_it_calls_a_grant_revoked_when_invalid_grant_follows_proof_that_nothing_rotated(
    due_grant, mock_refresh, mock_probe, settled
):
    _unanswered(due_grant, mock_refresh)
    mock_probe.return_value = True
    mock_refresh.side_effect = cloudflare.InvalidGrant("invalid_grant", status=400)

    assert grant_refresh(grant_id=due_grant.pk) == Outcome.REVOKED
    due_grant.refresh_from_db()
    assert due_grant.status == Grant.Status.REVOKED


def test_it_does_not_resend_without_evidence_by_default(due_grant, mock_refresh, mock_probe, settled):
    _unanswered(due_grant, mock_refresh)
    # The old access token expired on its own: its refusal would say nothing.
    Grant.objects.filter(pk=due_grant.pk).update(access_expires_at=timezone.now() - timedelta(seconds=1))

    assert grant_refresh(grant_id=due_grant.pk) == Outcome.LOST

    mock_refresh.assert_not_called()
    mock_probe.assert_not_called()
    assert GrantEvent.objects.get(grant=due_grant, kind="lost").detail["evidence"] == "none"


def test_it_gets_no_evidence_from_a_server_that_keeps_old_access_tokens_alive(
    due_grant, mock_refresh, mock_probe, settled
):
    settled.CLOUDFLARE_REFRESH_REVOKES_OLD_ACCESS = False
    _unanswered(due_grant, mock_refresh)
    mock_probe.return_value = True  # would be accepted even after a rotation

    assert grant_refresh(grant_id=due_grant.pk) == Outcome.LOST
    mock_refresh.assert_not_called()
    mock_probe.assert_not_called()


def test_it_resends_without_evidence_when_the_policy_says_so(due_grant, mock_refresh, mock_probe, settled):
    settled.GRANT_UNCERTAIN_POLICY = "resend"
    _unanswered(due_grant, mock_refresh)
    Grant.objects.filter(pk=due_grant.pk).update(access_expires_at=timezone.now() - timedelta(seconds=1))
    mock_refresh.return_value = _token()

    assert grant_refresh(grant_id=due_grant.pk) == Outcome.REFRESHED
    mock_refresh.assert_called_once()


def test_it_resends_within_the_servers_grace_period_once_the_first_request_is_over(
    due_grant, mock_refresh, mock_probe, settings
):
    settings.CLOUDFLARE_REFRESH_GRACE_SECONDS = 600
    settings.GRANT_UNCERTAIN_SETTLE = 60
    _unanswered(due_grant, mock_refresh)
    mock_refresh.return_value = _token()

    # The first request may still be running at Cloudflare: a re-send now could rotate before it
    # and leave the portal with a token that is not the newest. Wait, without a probe or a call.
    assert grant_refresh(grant_id=due_grant.pk, force=True) == Outcome.AWAITING_EVIDENCE
    mock_refresh.assert_not_called()

    Grant.objects.filter(pk=due_grant.pk).update(
        refresh_uncertain_since=timezone.now() - timedelta(seconds=61), next_refresh_at=timezone.now()
    )
    assert grant_refresh(grant_id=due_grant.pk) == Outcome.REFRESHED
    mock_probe.assert_not_called()


def test_it_asks_again_later_when_the_probe_cannot_be_made(due_grant, mock_refresh, mock_probe, settled):
    _unanswered(due_grant, mock_refresh)
    mock_probe.side_effect = cloudflare.Unavailable("userinfo: HTTP 503", status=503)

    assert grant_refresh(grant_id=due_grant.pk) == Outcome.TRANSIENT

    mock_refresh.assert_not_called()
    due_grant.refresh_from_db()
    assert due_grant.status == Grant.Status.ACTIVE and due_grant.refresh_uncertain_since is not None


def test_it_treats_an_expired_lease_as_an_unknown_outcome(due_grant, mock_refresh, mock_probe, settled):
    # A worker was killed mid-call: its lease expired, never released.
    Grant.objects.filter(pk=due_grant.pk).update(refresh_lease_until=timezone.now() - timedelta(seconds=1))
    mock_probe.return_value = False

    assert grant_refresh(grant_id=due_grant.pk) == Outcome.LOST
    mock_refresh.assert_not_called()
    due_grant.refresh_from_db()
    assert due_grant.status == Grant.Status.LOST


def test_it_makes_a_grant_due_again_the_moment_a_dead_holders_lease_runs_out(due_grant, mock_refresh):
    # The worker dies right after the claim (nothing after it runs, as with SIGKILL).
    with patch("connections.services.refresh._refresh_claimed", side_effect=SystemExit):
        with pytest.raises(SystemExit):
            grant_refresh(grant_id=due_grant.pk)

    due_grant.refresh_from_db()
    assert due_grant.refresh_lease_until is not None
    assert due_grant.next_refresh_at == due_grant.refresh_lease_until
    assert due_grant.refresh_lease_until <= timezone.now() + timedelta(seconds=45)


def test_it_does_not_call_a_refresh_uncertain_when_loading_the_app_fails(due_grant, mock_refresh):
    from django.db import OperationalError

    def unreachable(self):
        raise OperationalError("the database went away")

    with patch("connections.models.Grant.app", new_callable=lambda: property(unreachable)):
        with pytest.raises(OperationalError):
            grant_refresh(grant_id=due_grant.pk)

    mock_refresh.assert_not_called()
    due_grant.refresh_from_db()
    assert due_grant.refresh_uncertain_since is None
    assert due_grant.refresh_lease_until is None


def test_it_raises_one_app_wide_alert_on_invalid_client_and_changes_no_grant(oauth_app, acme, mock_refresh):
    grants = [
        factories.GrantFactory(
            app=oauth_app,
            client=acme,
            authorized_at=timezone.now() - timedelta(hours=1),
            access_expires_at=timezone.now() + timedelta(seconds=20),
        )
        for _ in range(3)
    ]
    before = {g.pk: (g.status, g.refresh_token_fp) for g in grants}
    mock_refresh.side_effect = cloudflare.InvalidClient("invalid_client", status=401)

    outcomes = [grant_refresh(grant_id=g.pk) for g in grants]

    assert outcomes[0] == Outcome.CLIENT_CONFIG
    alerts = Alert.objects.filter(kind="client_config")
    assert alerts.count() == 1 and alerts.get().app == oauth_app and alerts.get().grant is None
    after = {g.pk: (g.status, g.refresh_token_fp) for g in Grant.objects.filter(pk__in=before)}
    assert after == before
    # The other grants of the app were pushed back with it.
    assert all(g.next_refresh_at > timezone.now() + timedelta(seconds=200) for g in Grant.objects.all())


def test_it_closes_the_app_alert_once_a_refresh_works_again(due_grant, mock_refresh):
    mock_refresh.side_effect = cloudflare.InvalidClient("invalid_client", status=401)
    grant_refresh(grant_id=due_grant.pk)
    Grant.objects.filter(pk=due_grant.pk).update(next_refresh_at=timezone.now())
    mock_refresh.side_effect = None
    mock_refresh.return_value = _token()

    assert grant_refresh(grant_id=due_grant.pk) == Outcome.REFRESHED
    assert Alert.objects.get(kind="client_config").resolved_at is not None


@pytest.mark.parametrize(
    "error",
    [
        cloudflare.Unavailable("HTTP 503", status=503),
        cloudflare.BadResponse("expected JSON, got text/html (HTTP 403)", status=403),
        cloudflare.RateLimited("rate limited", status=429, retry_after=120),
        cloudflare.OAuthError("invalid_request", status=400),
    ],
    ids=["5xx", "html", "429", "other-oauth-error"],
)
def test_it_backs_off_on_transient_errors_without_touching_the_tokens(due_grant, mock_refresh, error):
    old_fp = due_grant.refresh_token_fp
    mock_refresh.side_effect = error

    assert grant_refresh(grant_id=due_grant.pk) == Outcome.TRANSIENT

    due_grant.refresh_from_db()
    assert due_grant.status == Grant.Status.ACTIVE
    assert due_grant.refresh_token_fp == old_fp
    assert due_grant.consecutive_failures == 1
    assert due_grant.last_error
    assert due_grant.next_refresh_at > timezone.now()
    if error.retry_after:
        assert due_grant.next_refresh_at >= timezone.now() + timedelta(seconds=119)
    assert not Alert.objects.exists()


def test_it_turns_refresh_failing_after_the_threshold_then_recovers_with_one_notice(due_grant, mock_refresh, settings):
    settings.GRANT_FAILURE_THRESHOLD = 3
    mock_refresh.side_effect = cloudflare.Unavailable("HTTP 502", status=502)
    for _ in range(5):
        Grant.objects.filter(pk=due_grant.pk).update(next_refresh_at=timezone.now())
        grant_refresh(grant_id=due_grant.pk)

    due_grant.refresh_from_db()
    assert due_grant.status == Grant.Status.REFRESH_FAILING
    assert due_grant.consecutive_failures == 5
    assert Alert.objects.filter(grant=due_grant, kind="refresh_failing").count() == 1
    # Failing alone, the grant's own alert goes out after the hold.
    alert = Alert.objects.get(grant=due_grant, kind="refresh_failing")
    assert alert.next_delivery_at > timezone.now() + timedelta(seconds=100)
    Alert.objects.filter(pk=alert.pk).update(next_delivery_at=timezone.now())
    alert_deliver(alert_id=alert.pk)
    assert Alert.objects.get(pk=alert.pk).delivered_at is not None
    # One event at the start of the streak and one at the threshold, not one per retry.
    assert GrantEvent.objects.filter(grant=due_grant, kind="refresh_failed").count() == 1
    assert GrantEvent.objects.filter(grant=due_grant, kind="refresh_failing").count() == 1

    mock_refresh.side_effect = None
    mock_refresh.return_value = _token()
    assert grant_refresh(grant_id=due_grant.pk) == Outcome.REFRESHED

    due_grant.refresh_from_db()
    assert due_grant.status == Grant.Status.ACTIVE and due_grant.consecutive_failures == 0
    assert Alert.objects.get(grant=due_grant, kind="refresh_failing").resolved_at is not None
    assert Alert.objects.filter(grant=due_grant, kind="recovered").count() == 1
    assert GrantEvent.objects.filter(grant=due_grant, kind="recovered").count() == 1


def test_it_records_changed_scopes_from_the_token_response(due_grant, mock_refresh):
    narrower = [s for s in due_grant.granted_scopes if s != "dns.write"]
    mock_refresh.return_value = _token(scopes=narrower)

    grant_refresh(grant_id=due_grant.pk)

    due_grant.refresh_from_db()
    assert due_grant.granted_scopes == narrower
    event = GrantEvent.objects.get(grant=due_grant, kind="scopes_changed")
    assert event.detail["removed"] == ["dns.write"]


def test_it_marks_uncertain_when_interrupted_during_the_call(due_grant, mock_refresh):
    from celery.exceptions import SoftTimeLimitExceeded

    mock_refresh.side_effect = SoftTimeLimitExceeded()
    with pytest.raises(SoftTimeLimitExceeded):
        grant_refresh(grant_id=due_grant.pk)

    due_grant.refresh_from_db()
    assert due_grant.refresh_uncertain_since is not None
    assert due_grant.refresh_lease_until is None


def test_it_never_logs_a_token(due_grant, mock_refresh, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    secret_refresh = due_grant.refresh_token
    mock_refresh.return_value = _token()
    grant_refresh(grant_id=due_grant.pk)

    assert f"grant={due_grant.pk} outcome=refreshed" in caplog.text
    for value in (secret_refresh, "cfoat_new_access_value", "cfort_new_refresh_value"):
        assert value not in caplog.text


# --- Scheduling -------------------------------------------------------------------------------


def test_it_caps_the_margin_for_short_token_lifetimes(settings):
    settings.GRANT_REFRESH_MARGIN, settings.GRANT_REFRESH_JITTER = 900, 60
    assert refresh_window(lifetime=120) == (30.0, 12.0)
    assert refresh_window(lifetime=16 * 3600) == (900.0, 60.0)
    expires = timezone.now() + timedelta(seconds=120)
    due = refresh_due_at(expires_at=expires, lifetime=120)
    assert expires - timedelta(seconds=42) <= due <= expires - timedelta(seconds=30)


def test_it_grows_the_backoff_and_honours_retry_after(settings):
    settings.GRANT_RETRY_BASE, settings.GRANT_RETRY_MAX = 30, 900
    assert 15 <= retry_delay(failures=1) <= 30
    assert 60 <= retry_delay(failures=3) <= 120
    assert 450 <= retry_delay(failures=20) <= 900
    assert retry_delay(failures=1, retry_after=300) == 300


def test_it_enqueues_each_due_grant_once_after_commit(oauth_app, acme, settings, django_capture_on_commit_callbacks):
    settings.GRANT_REFRESH_BATCH = 1  # one message per grant
    now = timezone.now()
    due = [
        factories.GrantFactory(app=oauth_app, client=acme, next_refresh_at=now - timedelta(seconds=5)) for _ in range(3)
    ]
    factories.GrantFactory(app=oauth_app, client=acme, next_refresh_at=now + timedelta(minutes=5))
    factories.GrantFactory(
        app=oauth_app, client=acme, status="disconnecting", next_refresh_at=now - timedelta(seconds=5)
    )

    with patch("connections.tasks.refresh_grant_task.delay") as delay:
        with django_capture_on_commit_callbacks(execute=True):
            assert grants_dispatch_due_refreshes(now=now, batch_size=2) == 3
        with django_capture_on_commit_callbacks(execute=True):
            assert grants_dispatch_due_refreshes(now=now) == 0  # claimed: invisible to a second sweep

    assert sorted(c.args[0] for c in delay.call_args_list) == sorted(g.pk for g in due)


def test_it_enqueues_due_grants_in_batches_each_grant_once(
    oauth_app, acme, settings, django_capture_on_commit_callbacks
):
    settings.GRANT_REFRESH_BATCH = 2
    settings.GRANT_REFRESH_PER_MESSAGE = 2
    now = timezone.now()
    due = [
        factories.GrantFactory(app=oauth_app, client=acme, next_refresh_at=now - timedelta(seconds=5)) for _ in range(5)
    ]
    factories.GrantFactory(app=oauth_app, client=acme, next_refresh_at=now + timedelta(minutes=5))

    with patch("connections.tasks.refresh_grants_task.delay") as delay:
        with django_capture_on_commit_callbacks(execute=True):
            assert grants_dispatch_due_refreshes(now=now, batch_size=3) == 5
        with django_capture_on_commit_callbacks(execute=True):
            assert grants_dispatch_due_refreshes(now=now) == 0

    batches = [c.args[0] for c in delay.call_args_list]
    assert all(1 <= len(batch) <= 2 for batch in batches)
    assert sorted(pk for batch in batches for pk in batch) == sorted(g.pk for g in due)


def _sweep_messages(oauth_app, acme, capture_on_commit, *, due_count: int, **sweep) -> tuple[list, list]:
    """`due_count` grants due, one refresh sweep: (the due grants, the id lists it enqueued)."""
    now = timezone.now()
    due = [
        factories.GrantFactory(app=oauth_app, client=acme, next_refresh_at=now - timedelta(seconds=5))
        for _ in range(due_count)
    ]
    with patch("connections.tasks.refresh_grants_task.delay") as delay:
        with capture_on_commit(execute=True):
            assert grants_dispatch_due_refreshes(now=now, **sweep) == due_count
    return due, [c.args[0] for c in delay.call_args_list]


def test_a_refresh_message_carries_sixteen_windows_of_grants_by_default(
    oauth_app, acme, settings, django_capture_on_commit_callbacks
):
    settings.GRANT_REFRESH_BATCH = 2
    settings.GRANT_REFRESH_PER_MESSAGE = 0

    due, batches = _sweep_messages(oauth_app, acme, django_capture_on_commit_callbacks, due_count=40, batch_size=40)

    assert [len(batch) for batch in batches] == [32, 8]
    assert sorted(pk for batch in batches for pk in batch) == sorted(g.pk for g in due)


def test_a_sweep_that_finds_few_grants_shares_them_over_several_messages(
    oauth_app, acme, settings, django_capture_on_commit_callbacks
):
    settings.GRANT_REFRESH_BATCH = 2
    settings.GRANT_REFRESH_PER_MESSAGE = 0
    settings.GRANT_REFRESH_SPREAD = 4

    due, batches = _sweep_messages(oauth_app, acme, django_capture_on_commit_callbacks, due_count=10)

    # Four processes can share ten grants: messages of three (never fewer than a window of two).
    assert [len(batch) for batch in batches] == [3, 3, 3, 1]
    assert sorted(pk for batch in batches for pk in batch) == sorted(g.pk for g in due)


def test_it_finds_a_grant_again_when_its_message_was_lost(
    oauth_app, acme, settings, django_capture_on_commit_callbacks
):
    settings.GRANT_DISPATCH_RETRY = 60
    now = timezone.now()
    grant = factories.GrantFactory(app=oauth_app, client=acme, next_refresh_at=now - timedelta(seconds=5))
    with patch("connections.tasks.refresh_grants_task.delay") as delay:
        delay.side_effect = OSError("broker down")
        with django_capture_on_commit_callbacks(execute=True):
            grants_dispatch_due_refreshes(now=now)
        delay.side_effect = None
        with django_capture_on_commit_callbacks(execute=True):
            assert grants_dispatch_due_refreshes(now=now + timedelta(seconds=61)) == 1
    assert delay.call_args.args == ([grant.pk],)


def test_a_revocation_is_counted_apart_from_refresh_failures(due_grant, mock_refresh):
    from agencyportal.dashboard import refresh_chart_svg, refresh_success_history
    from agencyportal.models import DailyFleetStats

    mock_refresh.side_effect = cloudflare.InvalidGrant("invalid_grant", "token revoked", status=400)
    assert grant_refresh(grant_id=due_grant.pk) == Outcome.REVOKED
    DailyFleetStats.count_refresh(ok=True)
    stats = DailyFleetStats.objects.get()
    assert (stats.refresh_ok, stats.refresh_failed, stats.refresh_ended) == (1, 0, 1)
    svg = refresh_chart_svg(refresh_success_history())
    assert "100.0% of 1 refreshes succeeded; 1 found the grant revoked" in svg


def test_it_keeps_the_refresh_history_on_the_grant_without_writing_events(due_grant, mock_refresh, admin_client):
    from django.urls import reverse

    from connections.models import GrantEvent
    from connections.services.refresh import REFRESH_HISTORY_LENGTH

    events_before = GrantEvent.objects.count()
    mock_refresh.side_effect = lambda **kwargs: _token(refresh=f"cfort_rotated_{secrets.token_hex(8)}")
    for _ in range(REFRESH_HISTORY_LENGTH + 2):
        assert grant_refresh(grant_id=due_grant.pk, force=True) == Outcome.REFRESHED
    assert GrantEvent.objects.count() == events_before  # routine refreshes write no event
    mock_refresh.side_effect = cloudflare.Unavailable("token: cannot connect")
    assert grant_refresh(grant_id=due_grant.pk, force=True) == Outcome.TRANSIENT
    due_grant.refresh_from_db()
    assert (due_grant.refresh_count, due_grant.refresh_failure_count) == (REFRESH_HISTORY_LENGTH + 2, 1)
    assert len(due_grant.refresh_history) == REFRESH_HISTORY_LENGTH
    assert due_grant.refresh_history[0]["outcome"] == "transient"
    page = admin_client.get(reverse("admin:connections_grant_change", args=[due_grant.pk])).content.decode()
    assert f"{REFRESH_HISTORY_LENGTH + 2} succeeded, 1 did not" in page
