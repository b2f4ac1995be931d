"""One alert per outage, not per grant: many grants failing together raise one incident alert."""

from __future__ import annotations

from datetime import timedelta
from unittest.mock import patch

import pytest
from django.utils import timezone

from connections import cloudflare, ratelimit
from connections.models import Alert, Grant
from connections.services.alerts import alert_deliver, alerts_dispatch_due
from connections.services.refresh import Outcome, grant_refresh
from tests import factories

TOKEN = cloudflare.TokenResponse(
    access_token="cfoat_after_outage_0123456789", refresh_token="cfort_after_outage_0123456789", expires_in=3600
)


@pytest.fixture(autouse=True)
def _settings(settings):
    ratelimit.reset()
    settings.GRANT_FAILURE_THRESHOLD = 3
    settings.GRANT_INCIDENT_MIN_GRANTS = 5
    settings.STAFF_ALERT_EMAILS = ["ops@agency.example"]


def _grants(app, client, count):
    return [
        factories.GrantFactory(
            app=app,
            client=client,
            access_expires_at=timezone.now() + timedelta(seconds=20),
            next_refresh_at=timezone.now() - timedelta(seconds=1),
            authorized_at=timezone.now() - timedelta(hours=1),
        )
        for _ in range(count)
    ]


def _attempt_all(grants, rounds):
    for _ in range(rounds):
        for grant in grants:
            Grant.objects.filter(pk=grant.pk).update(next_refresh_at=timezone.now())
            grant_refresh(grant_id=grant.pk)


def _deliver_everything_due():
    """Run delivery as the sweep would once every hold is over."""
    Alert.objects.filter(delivered_at__isnull=True).update(next_delivery_at=timezone.now() - timedelta(seconds=1))
    for alert_id in Alert.objects.filter(delivered_at__isnull=True).values_list("pk", flat=True):
        alert_deliver(alert_id=alert_id)


def test_it_raises_one_incident_alert_when_many_grants_fail_together(oauth_app, acme, mailoutbox):
    grants = _grants(oauth_app, acme, 12)
    with patch("connections.cloudflare.refresh", side_effect=cloudflare.Unavailable("HTTP 502", status=502)):
        _attempt_all(grants, rounds=4)
    _deliver_everything_due()

    assert Grant.objects.filter(status=Grant.Status.REFRESH_FAILING).count() == 12
    incident = Alert.objects.get(kind=Alert.Kind.INCIDENT)
    assert incident.app == oauth_app and incident.grant is None and incident.resolved_at is None
    assert "HTTP 502" in incident.message and "grants" in incident.message
    # The per-grant alerts of the first grants (before the incident) are held, never sent.
    sent = Alert.objects.exclude(email_status=Alert.Delivery.SKIPPED)
    assert list(sent.values_list("kind", flat=True)) == ["incident"]
    assert len(mailoutbox) == 1


def test_it_sends_one_recovered_notice_when_the_incident_ends(oauth_app, acme, mailoutbox):
    grants = _grants(oauth_app, acme, 8)
    with patch("connections.cloudflare.refresh", side_effect=cloudflare.Unavailable("HTTP 503", status=503)):
        _attempt_all(grants, rounds=3)
    _deliver_everything_due()
    with patch("connections.cloudflare.refresh", return_value=TOKEN):
        _attempt_all(grants, rounds=1)
    _deliver_everything_due()

    assert Alert.objects.get(kind=Alert.Kind.INCIDENT).resolved_at is not None
    recovered = Alert.objects.filter(kind=Alert.Kind.RECOVERED)
    assert recovered.count() == 1
    assert recovered.get().grant is None and "8 grants" in recovered.get().message
    assert [m.subject.rsplit("] ", 1)[-1] for m in mailoutbox] == ["Incident (many grants failing)", "Recovered"]


def test_it_still_alerts_a_single_grant_failing_alone(oauth_app, acme, mailoutbox):
    _grants(oauth_app, acme, 20)  # healthy neighbours
    (lonely,) = _grants(oauth_app, acme, 1)
    with patch("connections.cloudflare.refresh", side_effect=cloudflare.Unavailable("HTTP 502", status=502)):
        _attempt_all([lonely], rounds=3)

    alert = Alert.objects.get(kind=Alert.Kind.REFRESH_FAILING)
    assert alert.grant == lonely
    assert alerts_dispatch_due() == 0  # held for GRANT_INCIDENT_HOLD
    _deliver_everything_due()
    alert.refresh_from_db()
    assert alert.email_status == Alert.Delivery.SENT
    assert not Alert.objects.filter(kind=Alert.Kind.INCIDENT).exists()


def test_it_still_alerts_every_revocation_during_an_incident(oauth_app, acme):
    grants = _grants(oauth_app, acme, 6)
    with patch("connections.cloudflare.refresh", side_effect=cloudflare.Unavailable("HTTP 502", status=502)):
        _attempt_all(grants, rounds=3)
    with patch("connections.cloudflare.refresh", side_effect=cloudflare.InvalidGrant("invalid_grant", status=400)):
        assert grant_refresh(grant_id=grants[0].pk, force=True) == Outcome.REVOKED

    assert Alert.objects.filter(kind=Alert.Kind.REVOKED, grant=grants[0]).count() == 1
    assert Alert.objects.filter(kind=Alert.Kind.INCIDENT).count() == 1


def test_it_keeps_a_constant_number_of_queries_per_failure_whatever_the_fleet_size(
    oauth_app, acme, django_assert_max_num_queries
):
    grants = _grants(oauth_app, acme, 30)
    with patch("connections.cloudflare.refresh", side_effect=cloudflare.Unavailable("HTTP 502", status=502)):
        _attempt_all(grants[:29], rounds=3)
        Grant.objects.filter(pk=grants[29].pk).update(next_refresh_at=timezone.now())
        with django_assert_max_num_queries(20):
            grant_refresh(grant_id=grants[29].pk)
