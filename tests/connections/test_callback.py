"""Bad inputs to the OAuth callback (security checklist OA-02 … OA-07).

Every rejection is proven against the sandbox's ground truth: its token endpoint saw no call.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
import time_machine
from django.test import Client

from cloudflare_sandbox import seed
from connections.models import AuthorizationRequest, Grant, GrantEvent
from tests import factories
from tests.clients.portal_flow import (
    authorize_at_sandbox,
    callback_path,
    start_consent,
)

pytestmark = [pytest.mark.sandbox, pytest.mark.django_db]

CALLBACK = "/oauth/cloudflare/callback/"


@pytest.fixture
def started(owner_client, cf_app):
    """A consent attempt started by the owner: (authorize URL, state)."""
    url = start_consent(owner_client)
    state = dict(parse_qsl(urlsplit(url).query))["state"]
    return url, state


def token_calls(sandbox) -> int:
    return sandbox.calls().get("token", 0)


def the_request() -> AuthorizationRequest:
    return AuthorizationRequest.objects.get()


def rejected_events(**detail) -> list[GrantEvent]:
    events = list(GrantEvent.objects.filter(kind=GrantEvent.Kind.CALLBACK_REJECTED))
    return [e for e in events if all(e.detail.get(k) == v for k, v in detail.items())]


def test_it_rejects_a_callback_without_state(cf_sandbox, owner_client, started):
    response = owner_client.get(CALLBACK, {"code": "abc"})
    assert response.status_code == 303
    assert token_calls(cf_sandbox) == 0
    assert the_request().outcome == "pending"
    page = owner_client.get(response["Location"]).content.decode()
    assert "We could not verify this connection attempt" in page


def test_it_rejects_an_unknown_state(cf_sandbox, owner_client, started):
    owner_client.get(CALLBACK, {"code": "abc", "state": "x" * 43})
    assert token_calls(cf_sandbox) == 0
    assert the_request().outcome == "pending"
    assert not Grant.objects.exists()


def test_it_rejects_an_expired_state_before_any_token_call(cf_sandbox, owner_client, started):
    url, state = started
    location = authorize_at_sandbox(url)
    with time_machine.travel(the_request().expires_at + timedelta(seconds=1)):
        response = owner_client.get(callback_path(location))
    assert token_calls(cf_sandbox) == 0
    request = the_request()
    assert request.outcome == "expired" and request.consumed_at is not None
    assert rejected_events(reason="expired")
    assert "expired" in owner_client.get(response["Location"]).content.decode()


def test_it_makes_one_token_call_for_a_replayed_callback(cf_sandbox, owner_client, started):
    url, _ = started
    location = authorize_at_sandbox(url)
    first = owner_client.get(callback_path(location))
    second = owner_client.get(callback_path(location))
    assert first.status_code == second.status_code == 303
    assert cf_sandbox.calls()["token:authorization_code"] == 1
    assert Grant.objects.count() == 1
    assert rejected_events(reason="replayed")
    assert "Already connected" in owner_client.get("/portal/").content.decode()


def test_it_rejects_a_callback_arriving_in_another_session_and_leaves_the_attempt_usable(
    cf_sandbox, owner_client, client_owner, started
):
    url, _ = started
    location = authorize_at_sandbox(url)
    elsewhere = Client()
    elsewhere.force_login(client_owner)  # same person, a different browser session
    elsewhere.get(callback_path(location))
    assert token_calls(cf_sandbox) == 0
    assert rejected_events(reason="other_session")
    assert the_request().outcome == "pending"
    # The attempt was not burnt: its own session still finishes it.
    owner_client.get(callback_path(location))
    assert the_request().outcome == "granted"


def test_it_rejects_a_flow_started_by_one_user_and_finished_by_another(cf_sandbox, started, other_client_owner):
    url, _ = started
    location = authorize_at_sandbox(url)
    attacker = Client()
    attacker.force_login(other_client_owner)
    response = attacker.get(callback_path(location))
    assert token_calls(cf_sandbox) == 0
    assert not Grant.objects.exists()
    assert rejected_events(reason="other_session")
    # The other user is not told anything about the first user's attempt.
    page = attacker.get(response["Location"]).content.decode()
    assert "We could not verify this connection attempt" in page


def test_it_rejects_a_callback_without_any_portal_session(cf_sandbox, started):
    url, _ = started
    location = authorize_at_sandbox(url)
    response = Client().get(callback_path(location))
    assert response.status_code == 303 and response["Location"] == "/oauth/cloudflare/result/"
    assert token_calls(cf_sandbox) == 0


def test_it_attaches_the_grant_to_the_client_of_the_request_never_to_a_parameter(
    cf_sandbox, owner_client, started, acme
):
    other = factories.ClientFactory()
    url, _ = started
    location = authorize_at_sandbox(url)
    owner_client.get(callback_path(location) + f"&client={other.code}&client_id={other.pk}")
    grant = Grant.objects.get()
    assert grant.client == acme


def test_it_makes_no_token_call_for_an_error_with_a_code_and_consumes_the_state(cf_sandbox, owner_client, started):
    _, state = started
    owner_client.get(CALLBACK, {"error": "access_denied", "code": "leaked-code", "state": state})
    assert token_calls(cf_sandbox) == 0
    request = the_request()
    assert request.outcome == "cancelled" and request.consumed_at is not None
    # A second try with the same state is a replay, still no token call.
    owner_client.get(CALLBACK, {"code": "another", "state": state})
    assert token_calls(cf_sandbox) == 0
    assert rejected_events(reason="replayed")


def test_it_records_an_unknown_error_as_a_product_failure(cf_sandbox, owner_client, started):
    _, state = started
    response = owner_client.get(CALLBACK, {"error": "something_new", "state": state})
    assert token_calls(cf_sandbox) == 0
    assert GrantEvent.objects.filter(kind=GrantEvent.Kind.PRODUCT_FAILURE).count() == 1
    assert the_request().outcome == "denied"
    assert "Something went wrong on our side" in owner_client.get(response["Location"]).content.decode()


@pytest.mark.parametrize(
    ("error", "kind", "text"),
    [
        ("server_error", GrantEvent.Kind.UPSTREAM_FAILURE, "Cloudflare is not answering right now"),
        ("temporarily_unavailable", GrantEvent.Kind.UPSTREAM_FAILURE, "Cloudflare is not answering right now"),
        ("invalid_scope", GrantEvent.Kind.INVALID_SCOPE, "Cloudflare refused the agency"),
        ("unauthorized_client", GrantEvent.Kind.PRODUCT_FAILURE, "Something went wrong on our side"),
    ],
)
def test_it_records_each_callback_error_as_its_own_kind(cf_sandbox, owner_client, started, error, kind, text):
    _, state = started
    response = owner_client.get(CALLBACK, {"error": error, "state": state})
    assert token_calls(cf_sandbox) == 0
    assert GrantEvent.objects.filter(kind=kind).count() == 1
    assert text in owner_client.get(response["Location"]).content.decode()


def test_it_never_reflects_error_description_unescaped(cf_sandbox, owner_client, started):
    _, state = started
    script = "<script>alert('x')</script><img src=x onerror=alert(1)>"
    response = owner_client.get(CALLBACK, {"error": "access_denied", "error_description": script, "state": state})
    page = owner_client.get(response["Location"]).content.decode()
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;" in page
    assert token_calls(cf_sandbox) == 0


def test_it_rejects_64_kb_parameters_without_looking_anything_up(cf_sandbox, owner_client, started):
    _, state = started
    owner_client.get(CALLBACK, {"code": "c" * 65536, "state": state})
    assert token_calls(cf_sandbox) == 0
    assert the_request().outcome == "pending"


@pytest.mark.parametrize("raw_code", ["%ff%fe%fd", "abc%00def", "abc%0d%0aSet-Cookie:x=y", "%c3%28"])
def test_it_rejects_non_utf8_and_control_characters(cf_sandbox, owner_client, started, raw_code):
    _, state = started
    owner_client.get(f"{CALLBACK}?code={raw_code}&state={quote(state)}")
    assert token_calls(cf_sandbox) == 0
    assert the_request().outcome == "pending"


def test_it_rejects_a_repeated_state_parameter(cf_sandbox, owner_client, started):
    _, state = started
    owner_client.get(f"{CALLBACK}?code=abc&state={quote(state)}&state=other")
    assert token_calls(cf_sandbox) == 0


def test_it_answers_405_to_a_post(cf_sandbox, owner_client, started):
    _, state = started
    response = owner_client.post(CALLBACK, {"code": "abc", "state": state})
    assert response.status_code == 405
    assert token_calls(cf_sandbox) == 0
    assert the_request().outcome == "pending"


@pytest.mark.parametrize("variant", ["other_host", "trailing_slash", "upper_case", "empty"])
def test_it_rejects_an_iss_mismatch_before_any_token_call(cf_sandbox, owner_client, started, variant):
    url, _ = started
    location = authorize_at_sandbox(url)
    issuer = cf_sandbox.issuer
    wrong = {
        "other_host": "https://evil.example",
        "trailing_slash": issuer + "/",
        "upper_case": issuer.upper(),
        "empty": "",
    }[variant]
    params = dict(parse_qsl(urlsplit(location).query))
    assert params["iss"] == issuer  # the sandbox sends RFC 9207 iss by default
    params["iss"] = wrong
    owner_client.get(CALLBACK, params)
    assert token_calls(cf_sandbox) == 0
    request = the_request()
    assert request.outcome == "error" and request.error_code == "iss_mismatch"
    assert rejected_events(reason="iss_mismatch")


def test_it_checks_iss_on_error_responses_too(cf_sandbox, owner_client, started):
    _, state = started
    owner_client.get(CALLBACK, {"error": "access_denied", "state": state, "iss": "https://evil.example"})
    assert the_request().error_code == "iss_mismatch"
    assert not GrantEvent.objects.filter(kind=GrantEvent.Kind.CONSENT_CANCELLED).exists()


@pytest.fixture
def no_iss_server(cf_sandbox):
    """The server neither sends nor advertises iss (discovery), as a server without RFC 9207."""
    from connections import cloudflare

    cf_sandbox.settings(send_iss=False)
    cloudflare.discovery_forget()
    yield cf_sandbox
    cf_sandbox.reset_settings()
    cloudflare.discovery_forget()  # the next test's sandbox advertises iss again


def test_it_accepts_a_callback_without_iss_from_a_server_that_does_not_advertise_it(
    no_iss_server, owner_client, cf_app
):
    location = authorize_at_sandbox(start_consent(owner_client))
    assert "iss=" not in location
    owner_client.get(callback_path(location))
    assert Grant.objects.get().status == Grant.Status.ACTIVE


def test_it_refuses_a_code_without_iss_from_a_server_that_advertises_it(cf_sandbox, owner_client, started):
    url, _ = started  # discovery says iss is sent (the sandbox's default)
    params = dict(parse_qsl(urlsplit(authorize_at_sandbox(url)).query))
    del params["iss"]
    owner_client.get(CALLBACK, params)
    assert token_calls(cf_sandbox) == 0
    request = the_request()
    assert request.outcome == "error" and request.error_code == "iss_missing"
    assert rejected_events(reason="iss_missing")
    assert not Grant.objects.exists()


@pytest.mark.parametrize("policy", ["always", "never"])
def test_the_apps_iss_policy_overrides_discovery(no_iss_server, cf_sandbox, owner_client, cf_app, policy):
    # Discovery says "not sent".
    cf_app.iss_policy = policy
    cf_app.save()
    location = authorize_at_sandbox(start_consent(owner_client))
    owner_client.get(callback_path(location))
    if policy == "always":
        assert the_request().error_code == "iss_missing" and token_calls(cf_sandbox) == 0
    else:
        assert Grant.objects.get().status == Grant.Status.ACTIVE


def test_it_shows_cancelled_and_records_a_cancellation_when_the_user_denies(cf_sandbox, owner_client, started):
    url, _ = started
    location = authorize_at_sandbox(url, decision="deny")
    response = owner_client.get(callback_path(location))
    assert token_calls(cf_sandbox) == 0
    event = GrantEvent.objects.get(kind=GrantEvent.Kind.CONSENT_CANCELLED)
    assert event.category == "cancellation" and event.actor_type == "client"
    assert the_request().outcome == "cancelled"
    assert "Connection cancelled" in owner_client.get(response["Location"]).content.decode()


def test_it_records_invalid_scope_when_cloudflare_refuses_the_scopes(cf_sandbox, owner_client, cf_app):
    # The app asks for a scope its Cloudflare registration does not allow: Cloudflare answers
    # invalid_scope with a redirect, before any login.
    cf_app.optional_scopes = [*cf_app.optional_scopes, "billing.read"]
    cf_app.save()
    location = authorize_at_sandbox(start_consent(owner_client))
    assert "error=invalid_scope" in location
    owner_client.get(callback_path(location))
    assert token_calls(cf_sandbox) == 0
    assert GrantEvent.objects.get(kind=GrantEvent.Kind.INVALID_SCOPE).category == "missing_scope"
    assert the_request().outcome == "denied"


def test_it_records_an_upstream_failure_when_the_token_endpoint_fails(cf_sandbox, owner_client, started):
    url, _ = started
    location = authorize_at_sandbox(url)
    cf_sandbox.set_faults(error_5xx_rate=1.0, error_5xx_endpoints=["token"])
    response = owner_client.get(callback_path(location))
    assert GrantEvent.objects.get(kind=GrantEvent.Kind.UPSTREAM_FAILURE).category == "upstream"
    assert not Grant.objects.exists()
    assert "Cloudflare is not answering right now" in owner_client.get(response["Location"]).content.decode()


def test_it_records_an_upstream_failure_for_an_html_challenge_page(cf_sandbox, owner_client, started):
    url, _ = started
    location = authorize_at_sandbox(url)
    cf_sandbox.set_faults(html_challenge=True)
    owner_client.get(callback_path(location))
    assert GrantEvent.objects.filter(kind=GrantEvent.Kind.UPSTREAM_FAILURE).count() == 1
    assert not Grant.objects.exists()


def test_it_revokes_what_it_got_when_the_api_fails_after_the_exchange(cf_sandbox, owner_client, started):
    url, _ = started
    location = authorize_at_sandbox(url)
    cf_sandbox.set_faults(error_5xx_rate=1.0, error_5xx_endpoints=["api"])
    owner_client.get(callback_path(location))
    assert not Grant.objects.exists()
    assert GrantEvent.objects.get(kind=GrantEvent.Kind.UPSTREAM_FAILURE).detail["stage"] == "api"
    truth = cf_sandbox.state(client_id=AuthorizationRequest.objects.get().app.client_id)["grants"]
    assert [g["status"] for g in truth] == ["revoked"]


def test_it_does_not_follow_an_offsite_next_after_login(client, client_owner):
    for evil in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        response = client.post(
            f"/portal/login/?next={quote(evil)}",
            {"username": client_owner.username, "password": "correct-horse-battery", "next": evil},
        )
        assert response.status_code == 302
        assert response["Location"] == "/portal/", evil
        client.logout()


def test_it_sends_no_store_and_no_referrer_on_the_callback(cf_sandbox, owner_client, started):
    response = owner_client.get(CALLBACK, {"state": "nope"})
    assert response["Cache-Control"] == "no-store"
    assert response["Referrer-Policy"] == "no-referrer"


def test_it_finishes_with_a_connection_for_alice_with_two_accounts(cf_sandbox, owner_client, started):
    url, _ = started
    location = authorize_at_sandbox(url, email=seed.ALICE_EMAIL)
    owner_client.get(callback_path(location))
    grant = Grant.objects.get()
    assert sorted(a.name for a in grant.accounts.all()) == [seed.ACME_CORP, seed.ACME_STAGING]
    assert grant.declined_scopes == []


def test_a_callback_after_the_clean_up_sweep_says_expired(cf_sandbox, owner_client, started):
    from connections.services.consent import authorization_requests_expire

    url, _ = started
    location = authorize_at_sandbox(url)
    assert authorization_requests_expire(now=the_request().expires_at + timedelta(seconds=1)) == 1
    response = owner_client.get(callback_path(location))
    assert token_calls(cf_sandbox) == 0
    assert the_request().outcome == "expired"
    assert "expired" in owner_client.get(response["Location"]).content.decode()


def test_the_clean_up_sweep_leaves_live_attempts_alone(cf_sandbox, owner_client, started):
    from django.utils import timezone

    from connections.services.consent import authorization_requests_expire

    assert authorization_requests_expire(now=timezone.now()) == 0
    assert the_request().outcome == "pending"


def test_a_refused_request_alerts_staff_once_per_app(cf_sandbox, owner_client, cf_app):
    from connections.models import Alert

    for _ in range(2):
        state = dict(parse_qsl(urlsplit(start_consent(owner_client)).query))["state"]
        owner_client.get(CALLBACK, {"error": "invalid_scope", "state": state})
    alert = Alert.objects.get()
    assert alert.kind == Alert.Kind.CLIENT_CONFIG and alert.app == cf_app
    assert GrantEvent.objects.filter(kind=GrantEvent.Kind.INVALID_SCOPE).count() == 2
