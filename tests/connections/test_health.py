"""Health checks: probe, confirmation of auth errors through the refresh path, drift detection.

Cloudflare is mocked at the HTTP seam (`cloudflare.api_request`, `cloudflare.refresh`); the same
behaviours against the real sandbox process are in test_health_sandbox.py.
"""

from __future__ import annotations

from datetime import timedelta
from unittest.mock import patch

import pytest
from django.utils import timezone

from clients.models import CloudflareAccount, Zone
from connections import cloudflare, ratelimit
from connections.models import Alert, Grant, GrantEvent
from connections.services.health import CheckOutcome, grant_check, grants_dispatch_due_checks
from tests import factories


class FakeCloudflare:
    """Accounts and zones as Cloudflare would list them, plus switches for failures."""

    def __init__(self):
        self.accounts = {"acc1": "Acme Corp"}
        self.zones = {"acc1": [("z1", "acme.example"), ("z2", "acme.dev")]}
        self.auth_error_for: set[str] = set()  # access tokens Cloudflare refuses with 9109
        self.refused_accounts: set[str] = set()  # accounts whose admin switched OAuth apps off
        self.error: Exception | None = None
        self.calls: list[str] = []

    def api_request(self, method, path, *, access_token, params=None, json=None):
        self.calls.append(path)
        if self.error is not None:
            raise self.error
        if access_token in self.auth_error_for:
            raise cloudflare.ApiError("HTTP 403, codes [9109]", status=403, codes=[9109])
        if path == "/accounts":
            result = [{"id": k, "name": v} for k, v in self.accounts.items()]
        elif path == "/zones":
            account = params["account.id"]
            if account in self.refused_accounts:
                raise cloudflare.ApiError("HTTP 403, codes [10000]", status=403, codes=[10000])
            result = [
                {"id": zid, "name": name, "status": "active", "plan": {"name": "Free Website"}}
                for zid, name in self.zones.get(account, [])
            ]
        else:
            raise AssertionError(path)
        return {"success": True, "result": result, "result_info": {"page": 1, "total_pages": 1}}


@pytest.fixture(autouse=True)
def _fresh_limits():
    ratelimit.reset()


@pytest.fixture
def fake():
    fake = FakeCloudflare()
    with patch("connections.cloudflare.api_request", autospec=True, side_effect=fake.api_request):
        yield fake


@pytest.fixture
def grant(oauth_app, acme):
    return factories.GrantFactory(app=oauth_app, client=acme, next_check_at=timezone.now() - timedelta(seconds=1))


def test_it_records_a_healthy_grant_and_syncs_accounts_and_zones(grant, fake):
    assert grant_check(grant_id=grant.pk) == CheckOutcome.HEALTHY

    grant.refresh_from_db()
    assert grant.health == Grant.Health.HEALTHY
    assert grant.last_checked_at is not None
    assert grant.next_check_at > timezone.now() + timedelta(minutes=50)
    assert [a.cf_account_id for a in grant.accounts.all()] == ["acc1"]
    assert sorted(Zone.objects.values_list("name", flat=True)) == ["acme.dev", "acme.example"]
    assert GrantEvent.objects.filter(grant=grant, kind="accounts_changed").count() == 1
    assert GrantEvent.objects.filter(grant=grant, kind="zones_changed").count() == 1


def test_it_writes_events_only_when_something_changed(grant, fake):
    grant_check(grant_id=grant.pk)
    grant_check(grant_id=grant.pk, force=True)
    assert GrantEvent.objects.filter(grant=grant).count() == 2  # first sync only

    fake.zones["acc1"] = [("z1", "acme.example"), ("z3", "new.example")]
    fake.accounts["acc2"] = "Acme Staging"
    grant_check(grant_id=grant.pk, force=True)

    zones_event = GrantEvent.objects.filter(grant=grant, kind="zones_changed").first()
    assert zones_event.detail["added"] == ["new.example"] and zones_event.detail["removed"] == ["acme.dev"]
    accounts_event = GrantEvent.objects.filter(grant=grant, kind="accounts_changed").first()
    assert accounts_event.detail["added"] == [{"id": "acc2", "name": "Acme Staging"}]
    # Removed zones are marked, never deleted.
    assert Zone.objects.get(cf_zone_id="z2").removed_at is not None


def test_it_unlinks_an_account_the_grant_no_longer_reaches(grant, fake):
    grant_check(grant_id=grant.pk)
    del fake.accounts["acc1"]

    grant_check(grant_id=grant.pk, force=True)

    assert not grant.accounts.exists()
    account = CloudflareAccount.objects.get(cf_account_id="acc1")
    assert account.removed_at is not None
    event = GrantEvent.objects.filter(grant=grant, kind="accounts_changed").first()
    assert event.detail["removed_count"] == 1


def test_it_confirms_an_auth_error_through_the_refresh_path_before_calling_it_revoked(grant, fake):
    fake.auth_error_for.add(grant.access_token)
    with patch("connections.cloudflare.refresh", autospec=True) as refresh:
        refresh.side_effect = cloudflare.InvalidGrant("invalid_grant", status=400)
        assert grant_check(grant_id=grant.pk) == CheckOutcome.REVOKED

    refresh.assert_called_once()
    grant.refresh_from_db()
    assert grant.status == Grant.Status.REVOKED
    assert Alert.objects.filter(grant=grant, kind="revoked").count() == 1


def test_it_calls_a_persistent_auth_error_after_a_good_refresh_a_missing_permission(grant, fake):
    fake.auth_error_for.update({grant.access_token, "cfoat_fresh_token_but_still_refused_0000"})
    with patch("connections.cloudflare.refresh", autospec=True) as refresh:
        refresh.return_value = cloudflare.TokenResponse(
            access_token="cfoat_fresh_token_but_still_refused_0000",
            refresh_token="cfort_next_0000000000",
            expires_in=3600,
        )
        assert grant_check(grant_id=grant.pk) == CheckOutcome.DEGRADED

    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE
    assert grant.health == Grant.Health.DEGRADED
    assert Alert.objects.filter(grant=grant, kind="scope_missing").count() == 1
    assert not Alert.objects.filter(kind="revoked").exists()


def test_it_concludes_nothing_when_the_confirming_refresh_hits_an_outage(grant, fake):
    fake.auth_error_for.add(grant.access_token)
    with patch("connections.cloudflare.refresh", autospec=True) as refresh:
        refresh.side_effect = cloudflare.Unavailable("HTTP 503", status=503)
        assert grant_check(grant_id=grant.pk) == CheckOutcome.DEFERRED

    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE and grant.health == Grant.Health.UNKNOWN
    assert not Alert.objects.exists()


def test_it_reports_an_account_whose_admin_switched_off_oauth_apps(grant, fake):
    fake.accounts["acc2"] = "Acme Staging"
    fake.refused_accounts.add("acc2")

    assert grant_check(grant_id=grant.pk) == CheckOutcome.DEGRADED

    assert CloudflareAccount.objects.get(cf_account_id="acc2").oauth_access_enabled is False
    assert CloudflareAccount.objects.get(cf_account_id="acc1").oauth_access_enabled is True
    assert GrantEvent.objects.filter(grant=grant, kind="oauth_access_disabled").count() == 1
    assert Alert.objects.filter(grant=grant, kind="health_failing").count() == 1

    grant_check(grant_id=grant.pk, force=True)  # still off: no second event or alert
    assert GrantEvent.objects.filter(grant=grant, kind="oauth_access_disabled").count() == 1

    fake.refused_accounts.clear()
    assert grant_check(grant_id=grant.pk, force=True) == CheckOutcome.HEALTHY
    assert Alert.objects.get(grant=grant, kind="health_failing").resolved_at is not None
    assert Alert.objects.filter(grant=grant, kind="recovered").count() == 1


def test_it_flags_required_scopes_the_grant_lacks(grant, fake):
    Grant.objects.filter(pk=grant.pk).update(granted_scopes=["offline_access", "account-settings.read", "zone.read"])

    assert grant_check(grant_id=grant.pk) == CheckOutcome.DEGRADED

    alert = Alert.objects.get(grant=grant, kind="scope_missing")
    assert "dns.read" in alert.message and "user-details.read" in alert.message


@pytest.mark.parametrize(
    "error",
    [cloudflare.Unavailable("HTTP 503", status=503), cloudflare.BadResponse("expected JSON, got text/html")],
    ids=["5xx", "html"],
)
def test_it_treats_an_outage_as_no_evidence(grant, fake, error):
    fake.error = error

    assert grant_check(grant_id=grant.pk) == CheckOutcome.TRANSIENT

    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE and grant.health == Grant.Health.UNKNOWN
    assert grant.last_error.startswith("check:")
    assert grant.next_check_at > timezone.now()
    assert not Alert.objects.exists()


def test_it_honours_retry_after_and_blocks_the_user(grant, fake):
    fake.error = cloudflare.RateLimited("rate limited", status=429, retry_after=120)

    assert grant_check(grant_id=grant.pk) == CheckOutcome.DEFERRED

    grant.refresh_from_db()
    assert grant.next_check_at >= timezone.now() + timedelta(seconds=119)
    assert ratelimit.acquire(user_key=grant.cf_user_id) > 100


def test_it_waits_for_the_global_cap_instead_of_putting_the_check_off(grant, fake, settings):
    settings.CLOUDFLARE_GLOBAL_RATE = 1  # one request per second for the whole portal
    assert ratelimit.acquire(user_key=None) == 0  # this second's request is spent already

    assert grant_check(grant_id=grant.pk) == CheckOutcome.HEALTHY

    # Each call waited for the next second: all made, none spent on a check that was put off.
    assert fake.calls[0] == "/accounts" and len(fake.calls) >= 2
    grant.refresh_from_db()
    assert grant.health == Grant.Health.HEALTHY


def test_it_defers_without_calling_when_the_users_budget_is_spent(grant, fake, settings):
    settings.CLOUDFLARE_USER_BUDGET = 0

    assert grant_check(grant_id=grant.pk) == CheckOutcome.DEFERRED
    assert fake.calls == []


def test_it_refreshes_an_expired_token_before_probing(grant, fake):
    Grant.objects.filter(pk=grant.pk).update(access_expires_at=timezone.now() - timedelta(seconds=5))
    with patch("connections.cloudflare.refresh", autospec=True) as refresh:
        refresh.return_value = cloudflare.TokenResponse(
            access_token="cfoat_refreshed_for_the_probe_00000", refresh_token="cfort_next_0000000000", expires_in=3600
        )
        assert grant_check(grant_id=grant.pk) == CheckOutcome.HEALTHY
    refresh.assert_called_once()


def test_it_skips_a_duplicate_check(grant, fake):
    grant_check(grant_id=grant.pk)
    calls = len(fake.calls)

    assert grant_check(grant_id=grant.pk) == CheckOutcome.SKIPPED
    assert len(fake.calls) == calls


def test_it_enqueues_each_due_check_once(oauth_app, acme, settings, django_capture_on_commit_callbacks):
    settings.GRANT_CHECK_BATCH = 1  # one message per grant
    now = timezone.now()
    due = factories.GrantFactory(app=oauth_app, client=acme, next_check_at=now - timedelta(seconds=1))
    factories.GrantFactory(app=oauth_app, client=acme, next_check_at=now + timedelta(minutes=5))
    with patch("connections.tasks.check_grant_task.delay") as delay:
        with django_capture_on_commit_callbacks(execute=True):
            assert grants_dispatch_due_checks(now=now) == 1
            assert grants_dispatch_due_checks(now=now) == 0
    delay.assert_called_once_with(due.pk)


def test_it_enqueues_due_checks_in_batches_each_grant_once(
    oauth_app, acme, settings, django_capture_on_commit_callbacks
):
    settings.GRANT_CHECK_BATCH = 2
    now = timezone.now()
    due = [
        factories.GrantFactory(app=oauth_app, client=acme, next_check_at=now - timedelta(seconds=1)) for _ in range(3)
    ]
    factories.GrantFactory(app=oauth_app, client=acme, next_check_at=now + timedelta(minutes=5))
    with patch("connections.tasks.check_grants_task.delay") as delay:
        with django_capture_on_commit_callbacks(execute=True):
            assert grants_dispatch_due_checks(now=now) == 3
            assert grants_dispatch_due_checks(now=now) == 0
    batches = [c.args[0] for c in delay.call_args_list]
    assert all(1 <= len(batch) <= 2 for batch in batches)
    assert sorted(pk for batch in batches for pk in batch) == sorted(g.pk for g in due)
