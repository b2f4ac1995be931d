"""Disconnect (security checklist OA-14): stop at once, revoke at Cloudflare, retry until confirmed."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
import requests
import time_machine
from django.contrib.messages.storage.fallback import FallbackStorage
from django.test import Client, RequestFactory
from django.utils import timezone

from cloudflare_sandbox import seed
from connections import cloudflare
from connections.admin_actions import disconnect_grants
from connections.models import Alert, Grant, GrantEvent
from connections.services.disconnect import (
    NotDisconnectable,
    grant_disconnect,
    grant_revoke_at_cloudflare,
    revoke_pending_sweep,
)
from tests import factories
from tests.clients.portal_flow import connect_through_sandbox

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def eager(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True


@pytest.fixture
def connected(cf_sandbox, cf_app, owner_client):
    """A real grant: alice connected through the sandbox."""
    connect_through_sandbox(owner_client, email=seed.ALICE_EMAIL)
    cf_sandbox.reset_counters()
    return Grant.objects.get()


def sandbox_grant(sandbox, app):
    (truth,) = sandbox.state(client_id=app.client_id)["grants"]
    return truth


# --- The portal page ------------------------------------------------------------------------------


@pytest.mark.sandbox
def test_it_disconnects_from_the_portal_and_cloudflare_confirms(
    cf_sandbox, cf_app, connected, owner_client, eager, django_capture_on_commit_callbacks
):
    page = owner_client.get(f"/oauth/grants/{connected.code}/disconnect/")
    assert page.status_code == 200 and "Disconnect this connection?" in page.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(f"/oauth/grants/{connected.code}/disconnect/")
    assert response.status_code == 302 and response["Location"] == "/portal/"

    grant = Grant.objects.get()
    assert grant.status == Grant.Status.DISCONNECTED
    assert grant.end_reason == Grant.EndReason.DISCONNECTED_BY_CLIENT
    assert grant.access_token == grant.refresh_token == "" and grant.ended_at is not None
    assert sandbox_grant(cf_sandbox, cf_app)["status"] == "revoked"
    assert cf_sandbox.calls()["revoke"] == 2  # refresh token, then access token
    kinds = list(GrantEvent.objects.filter(grant=grant).order_by("at", "id").values_list("kind", flat=True))
    assert kinds[-2:] == ["disconnect_requested", "disconnected"]
    assert Alert.objects.get(grant=grant).kind == Alert.Kind.DISCONNECTED
    assert "Disconnected" in owner_client.get("/portal/").content.decode()


@pytest.mark.sandbox
def test_it_stops_using_the_grant_at_once_even_before_cloudflare_answers(cf_sandbox, cf_app, connected, owner_client):
    # No on_commit execution: the revocation has not run yet.
    owner_client.post(f"/oauth/grants/{connected.code}/disconnect/")
    grant = Grant.objects.get()
    assert grant.status == Grant.Status.DISCONNECTING
    assert grant.next_refresh_at is None and grant.next_check_at is None
    assert "revocation pending" in owner_client.get("/portal/").content.decode()


def test_it_refuses_a_disconnect_without_csrf_token(client_owner, acme):
    grant = factories.GrantFactory(client=acme)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(client_owner)
    response = browser.post(f"/oauth/grants/{grant.code}/disconnect/")
    assert response.status_code == 403
    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE


def test_it_accepts_a_disconnect_with_the_csrf_token_of_the_confirmation_page(client_owner, acme):
    grant = factories.GrantFactory(client=acme)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(client_owner)
    browser.get(f"/oauth/grants/{grant.code}/disconnect/")
    token = browser.cookies["csrftoken"].value
    response = browser.post(f"/oauth/grants/{grant.code}/disconnect/", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    grant.refresh_from_db()
    assert grant.status == Grant.Status.DISCONNECTING


@pytest.mark.parametrize("method", ["get", "post"])
def test_it_answers_404_for_another_clients_grant(client_owner, method):
    foreign = factories.GrantFactory()
    browser = Client()
    browser.force_login(client_owner)
    response = getattr(browser, method)(f"/oauth/grants/{foreign.code}/disconnect/")
    assert response.status_code == 404
    foreign.refresh_from_db()
    assert foreign.status == Grant.Status.ACTIVE


def test_it_refuses_a_viewer(acme):
    viewer = factories.ClientMemberFactory(client=acme, role="viewer").user
    grant = factories.GrantFactory(client=acme)
    browser = Client()
    browser.force_login(viewer)
    assert browser.post(f"/oauth/grants/{grant.code}/disconnect/").status_code == 403
    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE


def test_it_disconnects_once_when_clicked_twice(client_owner, acme):
    grant = factories.GrantFactory(client=acme)
    grant_disconnect(grant=grant, actor=client_owner, actor_type=GrantEvent.Actor.CLIENT)
    with pytest.raises(NotDisconnectable):
        grant_disconnect(grant=grant, actor=client_owner, actor_type=GrantEvent.Actor.CLIENT)
    assert GrantEvent.objects.filter(kind=GrantEvent.Kind.DISCONNECT_REQUESTED).count() == 1
    assert Alert.objects.filter(kind=Alert.Kind.DISCONNECTED).count() == 1


# --- Revocation at Cloudflare: retries ------------------------------------------------------------


@pytest.mark.sandbox
def test_it_keeps_revocation_pending_on_503_and_retries_until_cloudflare_confirms(
    cf_sandbox, cf_app, connected, client_owner
):
    grant_disconnect(grant=connected, actor=client_owner, actor_type=GrantEvent.Actor.CLIENT)
    cf_sandbox.set_faults(revoke_503=1.0, retry_after=120)

    result = grant_revoke_at_cloudflare(grant_id=connected.pk)
    grant = Grant.objects.get()
    assert not result.done
    assert grant.status == Grant.Status.DISCONNECTING
    assert grant.revoke_attempts == 1
    assert grant.next_revoke_at >= timezone.now() + timedelta(seconds=119)  # Retry-After honoured
    assert grant.refresh_token_fp  # nothing erased before Cloudflare confirms
    assert GrantEvent.objects.get(kind=GrantEvent.Kind.REVOCATION_RETRY).detail["attempt"] == 1
    assert sandbox_grant(cf_sandbox, cf_app)["status"] == "active"

    # Not due yet: the sweep leaves it alone.
    assert revoke_pending_sweep() == 0
    cf_sandbox.clear_faults()
    with time_machine.travel(grant.next_revoke_at + timedelta(seconds=1)):
        assert grant_revoke_at_cloudflare(grant_id=grant.pk).done
    grant.refresh_from_db()
    assert grant.status == Grant.Status.DISCONNECTED
    assert grant.access_token_fp == grant.refresh_token_fp == ""
    assert sandbox_grant(cf_sandbox, cf_app)["status"] == "revoked"


@pytest.mark.sandbox
def test_it_backs_off_exponentially_with_a_cap(cf_sandbox, cf_app, connected, client_owner, settings):
    settings.GRANT_REVOKE_BACKOFF_BASE = 10
    settings.GRANT_REVOKE_BACKOFF_MAX = 60
    grant_disconnect(grant=connected, actor=client_owner, actor_type=GrantEvent.Actor.CLIENT)
    cf_sandbox.set_faults(error_5xx_rate=1.0, error_5xx_endpoints=["revoke"], retry_after=0)
    delays = []
    now = timezone.now()
    for _ in range(5):
        with time_machine.travel(now, tick=False):
            grant_revoke_at_cloudflare(grant_id=connected.pk)
            grant = Grant.objects.get()
            delays.append((grant.next_revoke_at - now).total_seconds())
            now = grant.next_revoke_at + timedelta(seconds=1)
    assert 8 <= delays[0] <= 12 and 16 <= delays[1] <= 24 and 32 <= delays[2] <= 48
    assert all(d <= 72 for d in delays)
    assert Grant.objects.get().revoke_attempts == 5


@pytest.mark.sandbox
def test_it_retries_when_the_network_fails(cf_sandbox, cf_app, connected, client_owner, settings):
    grant_disconnect(grant=connected, actor=client_owner, actor_type=GrantEvent.Actor.CLIENT)
    settings.CLOUDFLARE_REVOKE_URL = "http://127.0.0.1:9/oauth2/revoke"  # nothing listens there
    assert not grant_revoke_at_cloudflare(grant_id=connected.pk).done
    event = GrantEvent.objects.get(kind=GrantEvent.Kind.REVOCATION_RETRY)
    assert event.detail["error"] == "Unavailable"


@pytest.mark.sandbox
def test_it_retries_when_the_answer_never_comes(cf_sandbox, cf_app, connected, client_owner, settings):
    grant_disconnect(grant=connected, actor=client_owner, actor_type=GrantEvent.Actor.CLIENT)
    settings.CLOUDFLARE_READ_TIMEOUT = 0.2
    cf_sandbox.set_faults(latency_ms=1000, latency_endpoints=["revoke"])
    assert not grant_revoke_at_cloudflare(grant_id=connected.pk).done
    assert GrantEvent.objects.get(kind=GrantEvent.Kind.REVOCATION_RETRY).detail["error"] == "UncertainOutcome"
    assert Grant.objects.get().status == Grant.Status.DISCONNECTING


def _answer(status: int, payload: dict | None):
    response = requests.Response()
    response.status_code = status
    response.headers["Content-Type"] = "application/json"
    response.raw = io.BytesIO(json.dumps(payload).encode() if payload is not None else b"")
    return response


class RevokeSeam:
    def __init__(self, answers):
        self.answers = list(answers)
        self.hints = []

    def request(self, method, url, **kwargs):
        self.hints.append(kwargs["data"]["token_type_hint"])
        return self.answers.pop(0)


def test_it_treats_unsupported_token_type_as_done_for_that_token(monkeypatch, client_owner, acme):
    grant = factories.GrantFactory(client=acme)
    grant_disconnect(grant=grant, actor=client_owner, actor_type=GrantEvent.Actor.CLIENT)
    seam = RevokeSeam([_answer(200, None), _answer(400, {"error": "unsupported_token_type"})])
    monkeypatch.setattr(cloudflare, "_session", lambda: seam)
    assert grant_revoke_at_cloudflare(grant_id=grant.pk).done
    assert seam.hints == ["refresh_token", "access_token"]
    assert Grant.objects.get().status == Grant.Status.DISCONNECTED


def test_it_keeps_what_was_revoked_when_the_second_call_fails(monkeypatch, client_owner, acme):
    grant = factories.GrantFactory(client=acme)
    grant_disconnect(grant=grant, actor=client_owner, actor_type=GrantEvent.Actor.CLIENT)
    seam = RevokeSeam([_answer(200, None), _answer(503, {"error": "temporarily_unavailable"})])
    monkeypatch.setattr(cloudflare, "_session", lambda: seam)
    assert not grant_revoke_at_cloudflare(grant_id=grant.pk).done
    grant.refresh_from_db()
    assert grant.refresh_token_fp == "" and grant.access_token_fp != ""
    # The retry presents only the access token.
    seam2 = RevokeSeam([_answer(200, None)])
    monkeypatch.setattr(cloudflare, "_session", lambda: seam2)
    with time_machine.travel(grant.next_revoke_at + timedelta(seconds=1)):
        assert grant_revoke_at_cloudflare(grant_id=grant.pk).done
    assert seam2.hints == ["access_token"]


def test_it_waits_for_a_refresh_in_flight_before_revoking(monkeypatch, client_owner, acme):
    grant = factories.GrantFactory(client=acme)
    grant_disconnect(grant=grant, actor=client_owner, actor_type=GrantEvent.Actor.CLIENT)
    Grant.objects.filter(pk=grant.pk).update(refresh_lease_until=timezone.now() + timedelta(seconds=60))
    seam = RevokeSeam([])
    monkeypatch.setattr(cloudflare, "_session", lambda: seam)
    result = grant_revoke_at_cloudflare(grant_id=grant.pk)
    assert not result.done and seam.hints == []
    assert Grant.objects.get().next_revoke_at > timezone.now() + timedelta(seconds=59)


def test_it_leaves_a_grant_that_is_not_disconnecting_alone(monkeypatch, acme):
    grant = factories.GrantFactory(client=acme)
    seam = RevokeSeam([])
    monkeypatch.setattr(cloudflare, "_session", lambda: seam)
    assert grant_revoke_at_cloudflare(grant_id=grant.pk).skipped
    assert seam.hints == [] and Grant.objects.get().status == Grant.Status.ACTIVE


def test_the_sweep_enqueues_only_due_revocations(monkeypatch, client_owner, acme):
    due = factories.GrantFactory(client=acme)
    later = factories.GrantFactory(client=acme)
    for g in (due, later):
        grant_disconnect(grant=g, actor=client_owner, actor_type=GrantEvent.Actor.CLIENT)
    Grant.objects.filter(pk=later.pk).update(next_revoke_at=timezone.now() + timedelta(hours=1))
    enqueued = []
    monkeypatch.setattr("connections.tasks.revoke_grant_task.delay", enqueued.append)
    assert revoke_pending_sweep() == 1
    assert enqueued == [due.pk]


# --- Staff: the admin action ----------------------------------------------------------------------


def _admin_request(user, data):
    request = RequestFactory().post("/admin/connections/grant/", data)
    request.user = user
    request.session = {}
    request._messages = FallbackStorage(request)
    return request


def test_the_admin_action_asks_for_confirmation_then_disconnects(agency_admin, acme):
    from django.contrib import admin

    grants = [factories.GrantFactory(client=acme) for _ in range(2)]
    model_admin = admin.ModelAdmin(Grant, admin.site)
    queryset = Grant.objects.filter(pk__in=[g.pk for g in grants])

    confirm = disconnect_grants(model_admin, _admin_request(agency_admin, {"action": "disconnect_grants"}), queryset)
    confirm.render()
    assert confirm.status_code == 200 and b"Yes, disconnect" in confirm.content
    assert not Grant.objects.filter(status=Grant.Status.DISCONNECTING).exists()

    done = disconnect_grants(model_admin, _admin_request(agency_admin, {"confirm": "yes"}), queryset)
    assert done is None
    assert Grant.objects.filter(status=Grant.Status.DISCONNECTING).count() == 2
    event = GrantEvent.objects.filter(kind=GrantEvent.Kind.DISCONNECT_REQUESTED).first()
    assert event.actor_type == "staff" and event.actor == agency_admin
    assert Grant.objects.first().end_reason == Grant.EndReason.DISCONNECTED_BY_STAFF
