"""What the callback does with each kind of bad token-endpoint answer (security checklist OA-08).

The token endpoint is replaced at the HTTP seam (the session `connections.cloudflare` uses), so each
answer is exactly the bytes under test; API calls still go to the real sandbox.
"""

from __future__ import annotations

import io
import json
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from django.conf import settings

from cloudflare_sandbox import seed
from connections import cloudflare
from connections.models import Alert, AuthorizationRequest, Grant, GrantEvent
from tests.clients.portal_flow import OPTIONAL, REQUIRED, start_consent

pytestmark = [pytest.mark.sandbox, pytest.mark.django_db]

CALLBACK = "/oauth/cloudflare/callback/"


def fake_response(status: int, body: bytes, content_type: str = "application/json", headers=None):
    response = requests.Response()
    response.status_code = status
    response.headers.update({"Content-Type": content_type, **(headers or {})})
    response.raw = io.BytesIO(body)
    response.url = settings.CLOUDFLARE_TOKEN_URL
    return response


class TokenSeam:
    """A requests.Session stand-in: the token endpoint answers `answer`, everything else is real."""

    def __init__(self, answer):
        self.answer = answer
        self.real = requests.Session()
        self.token_calls = 0

    def request(self, method, url, **kwargs):
        if url == settings.CLOUDFLARE_TOKEN_URL:
            self.token_calls += 1
            return self.answer
        return self.real.request(method, url, **kwargs)


@pytest.fixture
def live_tokens(cf_sandbox, cf_app):
    """Real tokens for alice, minted at the sandbox, so the API calls after the exchange work."""
    return cf_sandbox.mint_grants(
        client_id=cf_app.client_id, user_email=seed.ALICE_EMAIL, scopes=["offline_access", *REQUIRED], accounts="all"
    )[0]


def run_callback(owner_client, monkeypatch, answer) -> TokenSeam:
    url = start_consent(owner_client)
    state = dict(parse_qsl(urlsplit(url).query))["state"]
    seam = TokenSeam(answer)
    monkeypatch.setattr(cloudflare, "_session", lambda: seam)
    owner_client.get(CALLBACK, {"code": "a-code", "state": state, "iss": settings.CLOUDFLARE_ISSUER})
    return seam


BAD_ANSWERS = {
    "not_json": fake_response(200, b"access_token=x", "text/plain"),
    "html_200": fake_response(200, b"<html><body>Just a moment...</body></html>", "text/html"),
    "json_array": fake_response(200, b"[]"),
    "no_access_token": fake_response(200, json.dumps({"token_type": "bearer", "expires_in": 3600}).encode()),
    "no_token_type": fake_response(200, json.dumps({"access_token": "cfoat_x", "expires_in": 3600}).encode()),
    "wrong_token_type": fake_response(
        200, json.dumps({"access_token": "cfoat_x", "token_type": "mac", "expires_in": 3600}).encode()
    ),
    "expires_negative": fake_response(
        200, json.dumps({"access_token": "cfoat_x", "token_type": "bearer", "expires_in": -5}).encode()
    ),
    "expires_huge": fake_response(
        200, json.dumps({"access_token": "cfoat_x", "token_type": "bearer", "expires_in": 10**12}).encode()
    ),
    "expires_string": fake_response(
        200, json.dumps({"access_token": "cfoat_x", "token_type": "bearer", "expires_in": "3600"}).encode()
    ),
    "error_with_200": fake_response(200, json.dumps({"error": "invalid_grant", "access_token": "cfoat_x"}).encode()),
    "redirect_elsewhere": fake_response(302, b"", "text/html", {"Location": "https://evil.example/token"}),
    "ten_mb": fake_response(200, b"{" + b" " * (10 * 1024 * 1024) + b"}"),
}


@pytest.mark.parametrize("case", sorted(BAD_ANSWERS))
def test_it_rejects_an_unusable_token_answer_as_an_upstream_failure(
    cf_sandbox, cf_app, owner_client, monkeypatch, case
):
    answer = BAD_ANSWERS[case]
    answer.raw.seek(0)
    seam = run_callback(owner_client, monkeypatch, answer)
    assert seam.token_calls == 1
    assert not Grant.objects.exists()
    event = GrantEvent.objects.get(kind=GrantEvent.Kind.UPSTREAM_FAILURE)
    assert event.detail["stage"] == "token"
    assert AuthorizationRequest.objects.get().outcome == "error"
    assert cf_sandbox.calls().get("api", 0) == 0  # nothing read with a token we did not accept


def test_it_treats_invalid_grant_on_the_code_as_a_product_failure(cf_sandbox, cf_app, owner_client, monkeypatch):
    answer = fake_response(400, json.dumps({"error": "invalid_grant", "error_description": "code used"}).encode())
    run_callback(owner_client, monkeypatch, answer)
    assert GrantEvent.objects.get(kind=GrantEvent.Kind.PRODUCT_FAILURE).detail["error"] == "invalid_grant"


def test_it_raises_an_app_alarm_when_the_client_credentials_are_refused(cf_sandbox, cf_app, owner_client, monkeypatch):
    answer = fake_response(401, json.dumps({"error": "invalid_client"}).encode())
    run_callback(owner_client, monkeypatch, answer)
    assert GrantEvent.objects.filter(kind=GrantEvent.Kind.PRODUCT_FAILURE).count() == 1
    assert Alert.objects.get().kind == Alert.Kind.CLIENT_CONFIG


def test_it_flags_a_narrower_scope_than_requested(cf_sandbox, cf_app, owner_client, monkeypatch, live_tokens):
    granted = ["offline_access", *REQUIRED, "dns.write"]
    answer = fake_response(
        200,
        json.dumps(
            {
                "access_token": live_tokens["access_token"],
                "refresh_token": live_tokens["refresh_token"],
                "token_type": "bearer",
                "expires_in": 3600,
                "scope": " ".join(granted),
            }
        ).encode(),
    )
    run_callback(owner_client, monkeypatch, answer)
    grant = Grant.objects.get()
    assert grant.granted_scopes == granted
    assert grant.declined_scopes == [s for s in OPTIONAL if s != "dns.write"]
    assert grant.scope_coverage == "partial"
    assert (
        GrantEvent.objects.get(kind=GrantEvent.Kind.SCOPE_DECLINED).detail["declined_scopes"] == grant.declined_scopes
    )


def test_it_marks_a_missing_required_scope_and_alerts(cf_sandbox, cf_app, owner_client, monkeypatch, live_tokens):
    answer = fake_response(
        200,
        json.dumps(
            {
                "access_token": live_tokens["access_token"],
                "refresh_token": live_tokens["refresh_token"],
                "token_type": "bearer",
                "expires_in": 3600,
                "scope": "offline_access user-details.read account-settings.read zone.read",
            }
        ).encode(),
    )
    run_callback(owner_client, monkeypatch, answer)
    grant = Grant.objects.get()
    assert grant.status == Grant.Status.NEEDS_RECONSENT
    assert grant.missing_required_scopes == ["dns.read"]
    assert GrantEvent.objects.get(kind=GrantEvent.Kind.SCOPE_MISSING).detail["missing_scopes"] == ["dns.read"]
    assert Alert.objects.get(grant=grant).kind == Alert.Kind.SCOPE_MISSING
    page = owner_client.get("/portal/").content.decode()
    assert "a required permission is missing" in page


def test_it_flags_a_missing_refresh_token_as_cannot_auto_refresh(
    cf_sandbox, cf_app, owner_client, monkeypatch, live_tokens
):
    answer = fake_response(
        200,
        json.dumps(
            {
                "access_token": live_tokens["access_token"],
                "token_type": "bearer",
                "expires_in": 3600,
                "scope": " ".join(["offline_access", *REQUIRED, *OPTIONAL]),
            }
        ).encode(),
    )
    run_callback(owner_client, monkeypatch, answer)
    grant = Grant.objects.get()
    # Kept active (the access token works), never scheduled for a refresh, and staff are told.
    assert grant.status == Grant.Status.ACTIVE
    assert grant.refresh_token == "" and grant.next_refresh_at is None
    assert "cannot renew itself" in grant.last_error
    assert GrantEvent.objects.get(kind=GrantEvent.Kind.SCOPE_MISSING).detail["reason"] == "no_refresh_token"
    assert Alert.objects.get(grant=grant).kind == Alert.Kind.SCOPE_MISSING
    assert "Connected for a few hours only" in owner_client.get("/portal/").content.decode()
