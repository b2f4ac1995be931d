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


def test_it_labels_a_grant_lost_after_the_answer_to_a_rotation_was_dropped(cf_sandbox, grant):
    cf_sandbox.set_faults(drop_after_rotate=1)
    assert grant_refresh(grant_id=grant.pk) == Outcome.UNCERTAIN
    cf_sandbox.clear_faults()

    outcome = grant_refresh(grant_id=grant.pk, force=True)

    grant.refresh_from_db()
    truth = _truth(cf_sandbox, grant)
    # Cloudflare rotated; our token is the old one. Never "revoked": lost (or alive with a grace period).
    assert outcome in (Outcome.LOST, Outcome.REFRESHED)
    assert grant.status != Grant.Status.REVOKED
    if outcome == Outcome.LOST:
        assert grant.end_reason == Grant.EndReason.REFRESH_TOKEN_LOST
        assert Alert.objects.filter(grant=grant, kind="lost").count() == 1
    else:
        assert matches_ground_truth(grant, truth)


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
