"""Starting a consent: the authorization request, PKCE, state and the pre-consent page (OA-01, OA-02, OA-09)."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.test import Client

from connections.models import AuthorizationRequest, GrantEvent
from connections.services.consent import SESSION_BINDING_KEY, pkce_challenge, pkce_pair
from tests import factories

pytestmark = [pytest.mark.django_db]


def start(owner_client) -> tuple[str, dict[str, str]]:
    response = owner_client.post("/oauth/connect/")
    assert response.status_code == 303
    url = response["Location"]
    return url, dict(parse_qsl(urlsplit(url).query))


def test_pkce_matches_the_rfc_7636_appendix_b_vector():
    assert (
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


def test_pkce_verifiers_are_fresh_and_well_formed():
    verifiers = [pkce_pair()[0] for _ in range(10_000)]
    assert len(set(verifiers)) == 10_000
    assert all(43 <= len(v) <= 128 for v in verifiers)
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    assert all(set(v) <= allowed for v in verifiers[:100])


def test_it_creates_one_bound_single_use_request_per_attempt(owner_client, oauth_app, acme, client_owner, settings):
    url, params = start(owner_client)
    _, params2 = start(owner_client)
    assert AuthorizationRequest.objects.count() == 2
    assert params["state"] != params2["state"]

    request = AuthorizationRequest.objects.get(state_hash=hashlib.sha256(params["state"].encode()).hexdigest())
    assert len(params["state"]) >= 43  # 32 random bytes: 256 bits
    assert request.client == acme and request.user == client_owner and request.app == oauth_app
    assert request.outcome == "pending" and request.consumed_at is None
    assert request.expires_at - request.created_at == timedelta(minutes=10)
    assert request.expected_issuer == settings.CLOUDFLARE_ISSUER
    binding = owner_client.session[SESSION_BINDING_KEY]
    assert request.session_binding_hash == hashlib.sha256(binding.encode()).hexdigest()
    # Only hashes and ciphertext at rest: neither the state nor the verifier in clear text.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT state_hash, code_verifier FROM connections_authorizationrequest")
        raw = " ".join(str(v) for row in cursor.fetchall() for v in row)
    assert params["state"] not in raw and request.code_verifier not in raw
    assert params["code_challenge"] == pkce_challenge(request.code_verifier)
    assert GrantEvent.objects.filter(kind=GrantEvent.Kind.CONSENT_STARTED, client=acme).count() == 2


def test_the_redirect_to_cloudflare_carries_no_referrer(owner_client, oauth_app):
    response = owner_client.post("/oauth/connect/")
    assert response.status_code == 303
    assert response["Referrer-Policy"] == "no-referrer" and response["Cache-Control"] == "no-store"


def test_the_authorize_url_asks_for_offline_access_first_with_spaces_as_percent_20(owner_client, oauth_app, settings):
    url, params = start(owner_client)
    assert url.startswith(settings.CLOUDFLARE_AUTHORIZE_URL + "?")
    assert params["response_type"] == "code"
    assert params["client_id"] == oauth_app.client_id
    assert params["redirect_uri"] == oauth_app.redirect_uri
    assert params["code_challenge_method"] == "S256"
    assert params["scope"].split(" ") == oauth_app.all_scopes
    assert params["scope"].split(" ")[0] == "offline_access"
    raw_scope = urlsplit(url).query.split("scope=")[1].split("&")[0]
    assert "%20" in raw_scope and "+" not in raw_scope


def test_it_requests_only_the_declared_scopes(owner_client, oauth_app):
    """OA-09: the snapshot of what is asked for is the app's declaration, nothing more."""
    _, params = start(owner_client)
    assert (
        params["scope"]
        == "offline_access user-details.read account-settings.read zone.read dns.read dns.write cache.purge"
    )


def test_the_pre_consent_page_explains_each_scope_in_plain_words(owner_client, oauth_app, settings):
    response = owner_client.get("/oauth/connect/")
    body = response.content.decode()
    assert response.status_code == 200
    assert "Read and change DNS records in your zones" in body
    assert "See the DNS records of your zones" in body
    assert "Optional: you can untick these" in body
    assert oauth_app.name in body and oauth_app.publisher_domain in body
    assert "Continue to Cloudflare" in body
    assert response["Cache-Control"] == "no-store"
    assert response["Referrer-Policy"] == "same-origin"
    # The form's redirect goes to Cloudflare: this page alone allows that origin in form-action.
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(settings.CLOUDFLARE_AUTHORIZE_URL))
    csp = response["Content-Security-Policy"]
    assert f"form-action 'self' {origin}" in csp
    assert "script-src 'self'" in csp
    assert "<script" not in body and "style=" not in body


def test_other_portal_pages_keep_form_action_self(owner_client, oauth_app):
    csp = owner_client.get("/portal/")["Content-Security-Policy"]
    assert "form-action 'self';" in csp or csp.endswith("form-action 'self'")


def test_a_viewer_cannot_start_a_consent(acme, oauth_app):
    viewer = factories.ClientMemberFactory(client=acme, role="viewer").user
    browser = Client()
    browser.force_login(viewer)
    assert browser.post("/oauth/connect/").status_code == 403
    assert not AuthorizationRequest.objects.exists()


def test_it_says_so_when_no_oauth_app_is_configured(owner_client):
    response = owner_client.get("/oauth/connect/")
    assert response.status_code == 503
    assert "not available yet" in response.content.decode()


def test_the_consent_pages_need_a_signed_in_member(client, oauth_app, agency_admin):
    response = client.get("/oauth/connect/")
    assert response.status_code == 302 and response["Location"].startswith("/portal/login/")
    client.force_login(agency_admin)
    assert client.post("/oauth/connect/").status_code == 403
    assert not AuthorizationRequest.objects.exists()


@pytest.mark.parametrize("page", ["reconnect", "add-permissions", "disconnect"])
def test_grant_pages_answer_404_for_another_clients_grant(owner_client, oauth_app, page):
    foreign = factories.GrantFactory(app=oauth_app, declined_scopes=["cache.purge"])
    assert owner_client.get(f"/oauth/grants/{foreign.code}/{page}/").status_code == 404
    assert owner_client.post(f"/oauth/grants/{foreign.code}/{page}/").status_code == 404
    assert not AuthorizationRequest.objects.exists()


def test_reconnect_records_the_grant_it_replaces(owner_client, oauth_app, acme):
    grant = factories.GrantFactory(client=acme, app=oauth_app, status="revoked", ended_at="2026-01-01T00:00:00Z")
    response = owner_client.post(f"/oauth/grants/{grant.code}/reconnect/")
    assert response.status_code == 303
    request = AuthorizationRequest.objects.get()
    assert request.purpose == "reconnect" and request.replaces_grant == grant
