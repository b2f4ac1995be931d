"""The fleet dashboard: right numbers, links to the filtered lists, charts, constant queries."""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from agencyportal.dashboard import fleet_stats_record
from agencyportal.models import DailyFleetStats
from connections.models import Grant
from tests import factories


def _seed(n: int) -> None:
    app = factories.OAuthAppFactory()
    now = timezone.now()
    for i in range(n):
        grant = factories.GrantFactory(app=app, access_expires_at=now + timedelta(minutes=30 if i % 2 else 300))
        DailyFleetStats.count_refresh(ok=True)
        DailyFleetStats.count_refresh(ok=False)
        factories.AlertFactory(grant=grant)
    fleet_stats_record()


def _queries(admin_client) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert admin_client.get(reverse("admin:index")).status_code == 200
    return len(ctx.captured_queries)


def test_it_costs_the_same_number_of_queries_for_1_and_50_grants(admin_client):
    _seed(1)
    one = _queries(admin_client)
    _seed(49)
    assert _queries(admin_client) == one


def test_it_counts_the_fleet_and_links_each_number_to_its_list(admin_client):
    now = timezone.now()
    factories.GrantFactory(access_expires_at=now + timedelta(minutes=20))  # expiring soon
    revoked = factories.GrantFactory()
    revoked.clear_tokens()
    revoked.status, revoked.ended_at = Grant.Status.REVOKED, now - timedelta(days=1)
    revoked.save()
    factories.ClientFactory(name="Lonely Client")  # no grant
    body = admin_client.get(reverse("admin:index")).content.decode()
    assert "?expiry=soon" in body and "?connection=none" in body and "status__exact=revoked" in body
    # Each link opens a list that shows what the number counted.
    soon = admin_client.get(reverse("admin:connections_grant_changelist") + "?expiry=soon").content.decode()
    assert "1 grant" in soon
    none = admin_client.get(reverse("admin:clients_client_changelist") + "?connection=none").content.decode()
    assert "Lonely Client" in none


def test_it_draws_the_health_and_refresh_charts_as_inline_svg(admin_client):
    _seed(3)
    DailyFleetStats.objects.create(
        date=timezone.localdate() - timedelta(days=3),
        grants_by_health={"healthy": 2, "failing": 1},
        recorded_at=timezone.now(),
    )
    body = admin_client.get(reverse("admin:index")).content.decode()
    assert body.count('<svg class="fleet-chart"') == 2
    assert "2 healthy" in body and "1 failing" in body
    assert "50.0% of 6 refreshes succeeded" in body
    assert "<script" not in body.split('id="fleet-dashboard"')[1].split("</div>")[0]


def test_it_shows_todays_health_live_before_the_first_snapshot(admin_client):
    factories.GrantFactory(health="healthy")
    body = admin_client.get(reverse("admin:index")).content.decode()
    assert "1 healthy" in body


def test_it_counts_refresh_outcomes_per_day_alongside_the_snapshot(db):
    DailyFleetStats.count_refresh(ok=True)
    DailyFleetStats.count_refresh(ok=True)
    DailyFleetStats.count_refresh(ok=False)
    fleet_stats_record()  # the hourly snapshot must not reset the counters
    stats = DailyFleetStats.objects.get()
    assert (stats.refresh_ok, stats.refresh_failed) == (2, 1)


def test_it_records_one_snapshot_per_day(db):
    factories.GrantFactory.create_batch(2)
    fleet_stats_record()
    fleet_stats_record()
    stats = DailyFleetStats.objects.get()
    assert stats.grants_by_status == {"active": 2}
    assert stats.grants_by_health == {"unknown": 2}


def test_a_real_refresh_against_the_sandbox_is_counted_for_the_chart(cf_sandbox, acme):
    from connections import ratelimit
    from connections.services.refresh import Outcome, grant_refresh
    from tests.sandbox_grants import mint_grants, register_app

    ratelimit.reset()
    (grant,) = mint_grants(cf_sandbox, app=register_app(cf_sandbox), client=acme, count=1)
    assert grant_refresh(grant_id=grant.pk, force=True) == Outcome.REFRESHED
    stats = DailyFleetStats.objects.get(date=timezone.localdate())
    assert (stats.refresh_ok, stats.refresh_failed) == (1, 0)


def test_it_counts_overdue_refreshes_and_links_to_them(admin_client):
    now = timezone.now()
    overdue = factories.GrantFactory(next_refresh_at=now - timedelta(minutes=30), cf_user_email="late@x.example")
    factories.GrantFactory(next_refresh_at=now + timedelta(minutes=30), cf_user_email="fine@x.example")
    body = admin_client.get(reverse("admin:index")).content.decode()
    assert "?expiry=overdue" in body
    listed = admin_client.get(reverse("admin:connections_grant_changelist"), {"expiry": "overdue"}).content.decode()
    assert overdue.cf_user_email in listed and "fine@x.example" not in listed


def test_the_engine_gathers_refresh_counts_and_writes_them_every_few_seconds(db, settings):
    # Every refresh updating one row per day made workers queue on it: the engine's counts gather
    # in the process and are written together (one UPDATE per field), and nothing is lost.
    settings.FLEET_COUNT_FLUSH_SECONDS = 3600
    DailyFleetStats.flush_counts()  # starts the interval now
    for _ in range(5):
        DailyFleetStats.count_refresh(ok=True, batched=True)
    DailyFleetStats.count_refresh(ok=False, batched=True)
    assert not DailyFleetStats.objects.exists()

    DailyFleetStats.flush_counts()  # every FLEET_COUNT_FLUSH_SECONDS, and when the process exits
    stats = DailyFleetStats.objects.get()
    assert (stats.refresh_ok, stats.refresh_failed) == (5, 1)

    settings.FLEET_COUNT_FLUSH_SECONDS = 0
    DailyFleetStats.count_refresh(ok=True, batched=True)
    stats.refresh_from_db()
    assert stats.refresh_ok == 6


def test_it_counts_todays_live_grants_by_health_in_the_same_pass_as_the_tiles(db):
    from agencyportal.dashboard import fleet_summary, health_today
    from clients.models import Client
    from connections.models import Alert

    app = factories.OAuthAppFactory()
    for health, status in [("healthy", "active"), ("healthy", "active"), ("failing", "refresh_failing")]:
        factories.GrantFactory(app=app, health=health, status=status)
    factories.GrantFactory(app=app, health="degraded", status="revoked", ended_at=timezone.now())  # ended: not counted
    grants = Grant.objects.all()
    with CaptureQueriesContext(connection) as ctx:
        summary = fleet_summary(grants=grants, clients=Client.objects.all(), alerts=Alert.objects.all())
    assert len(ctx.captured_queries) == 3  # grants (tiles and health), clients, alerts
    assert summary["health_today"] == health_today(grants=grants) == {"healthy": 2, "failing": 1}
