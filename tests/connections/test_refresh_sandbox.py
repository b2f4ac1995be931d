"""The refresh engine against the real sandbox process, checked against the sandbox's ground truth."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from connections import ratelimit
from connections.models import Alert, Grant
from connections.services.refresh import Outcome, grant_refresh
from tests.sandbox_grants import matches_ground_truth, mint_grants, register_app

pytestmark = pytest.mark.sandbox


@pytest.fixture(autouse=True)
def _fresh_limits():
    ratelimit.reset()


@pytest.fixture
def app(cf_sandbox, db):
    return register_app(cf_sandbox)


@pytest.fixture
def grant(cf_sandbox, app, acme):
    (grant,) = mint_grants(cf_sandbox, app=app, client=acme, count=1)
    # Put it inside its refresh window.
    Grant.objects.filter(pk=grant.pk).update(
        authorized_at=timezone.now() - timedelta(hours=1), access_expires_at=timezone.now() + timedelta(seconds=5)
    )
    grant.refresh_from_db()
    grant.sandbox_grant_id = cf_sandbox.state(client_id=app.client_id)["grants"][0]["id"]
    return grant


def _truth(sandbox, grant):
    return sandbox.grant(grant.sandbox_grant_id)


def test_it_rotates_the_tokens_and_holds_the_current_refresh_token(cf_sandbox, grant):
    assert grant_refresh(grant_id=grant.pk) == Outcome.REFRESHED

    grant.refresh_from_db()
    truth = _truth(cf_sandbox, grant)
    assert matches_ground_truth(grant, truth)
    assert truth["refresh_count"] == 1 and truth["reuse_count"] == 0
    assert grant.access_expires_at > timezone.now() + timedelta(minutes=50)


def test_it_keeps_working_for_several_rotations(cf_sandbox, grant):
    for _ in range(3):
        assert grant_refresh(grant_id=grant.pk, force=True) == Outcome.REFRESHED
    grant.refresh_from_db()
    truth = _truth(cf_sandbox, grant)
    assert matches_ground_truth(grant, truth) and truth["refresh_count"] == 3 and truth["reuse_count"] == 0


def test_it_keeps_the_refresh_token_when_the_server_does_not_rotate(cf_sandbox, grant):
    cf_sandbox.settings(rotate_refresh_tokens=False)
    try:
        before = grant.refresh_token_fp
        assert grant_refresh(grant_id=grant.pk) == Outcome.REFRESHED
        grant.refresh_from_db()
        assert grant.refresh_token_fp == before
        assert matches_ground_truth(grant, _truth(cf_sandbox, grant))
    finally:
        cf_sandbox.reset_settings()


def test_it_makes_no_token_call_for_a_fresh_grant(cf_sandbox, grant):
    grant_refresh(grant_id=grant.pk)
    cf_sandbox.reset_counters()

    assert grant_refresh(grant_id=grant.pk) == Outcome.FRESH
    assert cf_sandbox.calls().get("POST /oauth2/token", 0) == 0


@pytest.mark.parametrize("status", [400, 401])
def test_it_marks_a_grant_the_user_revoked_as_revoked(cf_sandbox, grant, status):
    cf_sandbox.settings(invalid_grant_status=status)
    try:
        cf_sandbox.revoke_grant(grant.sandbox_grant_id)
        assert grant_refresh(grant_id=grant.pk) == Outcome.REVOKED
    finally:
        cf_sandbox.reset_settings()
    grant.refresh_from_db()
    assert grant.status == Grant.Status.REVOKED
    assert Alert.objects.filter(grant=grant, kind="revoked").count() == 1


def test_it_labels_a_grant_lost_without_a_reuse_after_the_answer_to_a_rotation_was_dropped(cf_sandbox, grant, settings):
    settings.GRANT_UNCERTAIN_SETTLE = 0
    cf_sandbox.set_faults(drop_after_rotate=1)
    assert grant_refresh(grant_id=grant.pk) == Outcome.UNCERTAIN
    cf_sandbox.clear_faults()

    # The old access token is refused (Hydra revoked it with the rotation): lost, nothing re-sent.
    assert grant_refresh(grant_id=grant.pk, force=True) == Outcome.LOST

    grant.refresh_from_db()
    truth = _truth(cf_sandbox, grant)
    assert truth["reuse_count"] == 0 and truth["refresh_count"] == 1
    assert grant.end_reason == Grant.EndReason.REFRESH_TOKEN_LOST
    assert Alert.objects.filter(grant=grant, kind="lost").count() == 1
    assert not Alert.objects.filter(kind="revoked").exists()


def test_it_recovers_the_grant_within_the_servers_grace_period(cf_sandbox, grant, settings):
    cf_sandbox.settings(refresh_grace_seconds=600)
    settings.CLOUDFLARE_REFRESH_GRACE_SECONDS = 600
    settings.GRANT_UNCERTAIN_SETTLE = 0
    try:
        cf_sandbox.set_faults(drop_after_rotate=1)
        assert grant_refresh(grant_id=grant.pk) == Outcome.UNCERTAIN
        cf_sandbox.clear_faults()

        assert grant_refresh(grant_id=grant.pk, force=True) == Outcome.REFRESHED
    finally:
        cf_sandbox.reset_settings()
    grant.refresh_from_db()
    truth = _truth(cf_sandbox, grant)
    assert matches_ground_truth(grant, truth)
    assert truth["reuse_count"] == 0 and truth["grace_count"] == 1


def test_it_holds_without_a_reuse_when_the_server_keeps_old_access_tokens_alive(cf_sandbox, grant, settings):
    cf_sandbox.settings(refresh_revokes_old_access=False)
    settings.CLOUDFLARE_REFRESH_REVOKES_OLD_ACCESS = False
    settings.GRANT_UNCERTAIN_SETTLE = 0
    try:
        cf_sandbox.set_faults(drop_after_rotate=1)
        assert grant_refresh(grant_id=grant.pk) == Outcome.UNCERTAIN
        cf_sandbox.clear_faults()

        assert grant_refresh(grant_id=grant.pk, force=True) == Outcome.LOST
    finally:
        cf_sandbox.reset_settings()
    assert _truth(cf_sandbox, grant)["reuse_count"] == 0


def test_it_refreshes_after_a_timeout_that_the_server_never_acted_on(cf_sandbox, grant, settings):
    # The first request timed out before the token endpoint processed it; the old access token
    # still works, which proves it: the next refresh is safe.
    from unittest.mock import patch

    from connections import cloudflare

    settings.GRANT_UNCERTAIN_SETTLE = 0
    Grant.objects.filter(pk=grant.pk).update(access_expires_at=timezone.now() + timedelta(seconds=60))
    with patch("connections.cloudflare.refresh", side_effect=cloudflare.UncertainOutcome("no answer")):
        assert grant_refresh(grant_id=grant.pk) == Outcome.UNCERTAIN

    assert grant_refresh(grant_id=grant.pk, force=True) == Outcome.REFRESHED
    grant.refresh_from_db()
    truth = _truth(cf_sandbox, grant)
    assert matches_ground_truth(grant, truth) and truth["reuse_count"] == 0


def test_it_raises_an_app_alert_when_the_client_secret_is_wrong(cf_sandbox, grant):
    app = grant.app
    app.set_client_secret("not-the-secret")
    app.save()

    assert grant_refresh(grant_id=grant.pk) == Outcome.CLIENT_CONFIG

    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE
    assert matches_ground_truth(grant, _truth(cf_sandbox, grant))
    assert Alert.objects.filter(kind="client_config", app=app).count() == 1


@pytest.mark.parametrize(
    "faults",
    [{"storm_429": True, "retry_after": 90}, {"error_5xx_rate": 1.0}, {"html_challenge": True}],
    ids=["429", "5xx", "html"],
)
def test_it_treats_outages_as_transient_and_recovers(cf_sandbox, grant, faults):
    cf_sandbox.set_faults(**faults)
    assert grant_refresh(grant_id=grant.pk) == Outcome.TRANSIENT
    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE and grant.consecutive_failures == 1
    if "retry_after" in faults:
        assert grant.next_refresh_at >= timezone.now() + timedelta(seconds=85)

    cf_sandbox.clear_faults()
    ratelimit.reset()
    assert grant_refresh(grant_id=grant.pk) == Outcome.REFRESHED
    grant.refresh_from_db()
    assert matches_ground_truth(grant, _truth(cf_sandbox, grant))
    assert _truth(cf_sandbox, grant)["reuse_count"] == 0
