"""The verification run of an OAuth app against the sandbox: one that passes, one that fails
because access outlives the revoke (sandbox setting), one without identity evidence."""

from __future__ import annotations

import pytest

from apitokens.models import VerificationRun
from apitokens.verification import app_verified, verification_run
from clients.models import Zone
from tests.operations.conftest import sandbox_grant

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _short_window(settings):
    settings.VERIFICATION_PROBE_WINDOW = 1
    settings.VERIFICATION_PROBE_INTERVAL = 0.2


def _setup(sandbox, client):
    grant = sandbox_grant(sandbox, client=client)
    zone = Zone.objects.filter(account__grants=grant, name="acme.com").get()
    return grant, zone


def test_a_run_passes_with_evidence_for_every_step(cf_sandbox, acme, agency_admin):
    grant, zone = _setup(cf_sandbox, acme)
    assert not app_verified(grant.app)
    run = verification_run(app=grant.app, test_client=acme, test_zone=zone, staff=agency_admin, name_confirmed=True)
    steps = {s["step"]: s for s in run.steps}
    assert run.outcome == "passed", run.steps
    assert run.name_confirmed_by == agency_admin and "confirmed" in steps["identity"]["evidence"]
    assert {"scope_audit", "test_connection", "read:user.read", "read:dns.records.list"} <= set(steps)
    assert {
        "write:dns.record.create",
        "write:dns.record.update",
        "write:dns.record.delete",
        "write:cache.purge",
    } <= set(steps)
    assert steps["access_gone"]["ok"] and all(s["at"] for s in run.steps)
    # Reversible: the TXT record it created is gone again.
    writes = [w["kind"] for w in cf_sandbox.writes(grant_id=grant.sandbox_grant_id)]
    assert writes.count("dns.create") == 1 and writes.count("dns.delete") == 1
    grant.refresh_from_db()
    assert grant.status in ("disconnecting", "disconnected")
    assert app_verified(grant.app)


def test_a_run_fails_loudly_when_access_outlives_the_revoke(cf_sandbox, acme, agency_admin, caplog):
    cf_sandbox.settings(revoke_refresh_kills_access=False)
    grant, zone = _setup(cf_sandbox, acme)
    run = verification_run(app=grant.app, test_client=acme, test_zone=zone, staff=agency_admin, name_confirmed=True)
    assert run.outcome == "failed"
    last = run.steps[-1]
    assert last["step"] == "probe" and not last["ok"] and "Access outlives the revoke" in last["evidence"]
    assert "failed at probe" in caplog.text
    assert not app_verified(grant.app)


def test_a_run_without_identity_evidence_fails_at_the_first_step(cf_sandbox, acme, agency_admin):
    grant, zone = _setup(cf_sandbox, acme)
    run = verification_run(app=grant.app, test_client=acme, test_zone=zone, staff=agency_admin)
    assert run.outcome == "failed" and [s["step"] for s in run.steps] == ["identity"]
    assert VerificationRun.objects.get().finished_at is not None


def test_an_app_without_a_passed_run_is_marked_not_verified_on_its_page_and_the_dashboard(admin_client, oauth_app):
    page = admin_client.get(f"/admin/connections/oauthapp/{oauth_app.pk}/change/").content.decode()
    assert "Not verified" in page and "no verification run has passed" in page
    dashboard = admin_client.get("/admin/")
    tiles = dashboard.content.decode()
    assert "OAuth apps not verified" in tiles
    VerificationRun.objects.create(app=oauth_app, outcome="passed")
    page = admin_client.get(f"/admin/connections/oauthapp/{oauth_app.pk}/change/").content.decode()
    assert "Verified: run of" in page and "Not verified" not in page


def test_the_admin_starts_a_run_that_a_worker_carries_out(
    cf_sandbox, acme, admin_client, settings, django_capture_on_commit_callbacks
):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    grant, zone = _setup(cf_sandbox, acme)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/apitokens/verificationrun/add/", {"app": grant.app.pk, "zone": zone.pk, "name_confirmed": "on"}
        )
    assert response.status_code == 302
    run = VerificationRun.objects.get()
    assert run.outcome == "passed" and run.name_confirmed_by is not None
    report = admin_client.get(f"/admin/apitokens/verificationrun/{run.pk}/change/").content.decode()
    assert "access_gone" in report and "write:dns.record.create" in report
