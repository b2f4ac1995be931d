"""Revocation (RFC 7009), userinfo and discovery."""

from __future__ import annotations

import requests

from cloudflare_sandbox.seed import ALICE_ID, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from cloudflare_sandbox.testing import refresh_tokens

AUTH = (DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)


def _revoke(sandbox, token, *, hint=None, auth=AUTH):
    data = {"token": token}
    if hint:
        data["token_type_hint"] = hint
    return requests.post(f"{sandbox.base_url}/oauth2/revoke", data=data, auth=auth)


def _zones_status(sandbox, access_token):
    response = requests.get(f"{sandbox.api_url}/zones", headers={"Authorization": f"Bearer {access_token}"})
    return response.status_code


def test_revoke_answers_an_empty_200_even_for_unknown_tokens(sandbox_clean):
    for token in ("cfort_unknown", "cfoat_unknown", "garbage"):
        response = _revoke(sandbox_clean, token, hint="refresh_token")
        assert response.status_code == 200 and response.content == b""


def test_revoking_the_refresh_token_ends_the_grant(sandbox_clean):
    tokens = sandbox_clean.connect()
    assert _revoke(sandbox_clean, tokens["refresh_token"], hint="refresh_token").status_code == 200
    grant = sandbox_clean.grant_for_token(tokens["refresh_token"])
    assert grant["status"] == "revoked" and grant["revoked_reason"] == "revoked_by_client"
    assert refresh_tokens(sandbox_clean.base_url, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert _zones_status(sandbox_clean, tokens["access_token"]) == 403
    assert sandbox_clean.state()["reuse_count"] == 0  # a revoked token is not a reuse


def test_access_tokens_can_outlive_a_refresh_revocation_when_configured(sandbox_clean):
    sandbox_clean.settings(revoke_refresh_kills_access=False)
    tokens = sandbox_clean.connect()
    _revoke(sandbox_clean, tokens["refresh_token"])
    assert _zones_status(sandbox_clean, tokens["access_token"]) == 200
    assert refresh_tokens(sandbox_clean.base_url, tokens["refresh_token"]).status_code == 400


def test_revoking_an_access_token_leaves_the_grant(sandbox_clean):
    tokens = sandbox_clean.connect()
    assert _revoke(sandbox_clean, tokens["access_token"], hint="access_token").status_code == 200
    assert _zones_status(sandbox_clean, tokens["access_token"]) == 403
    assert sandbox_clean.grant_for_token(tokens["refresh_token"])["status"] == "active"
    assert refresh_tokens(sandbox_clean.base_url, tokens["refresh_token"]).status_code == 200


def test_revoke_requires_client_authentication_by_default(sandbox_clean):
    tokens = sandbox_clean.connect()
    assert _revoke(sandbox_clean, tokens["refresh_token"], auth=None).status_code == 400
    wrong = _revoke(sandbox_clean, tokens["refresh_token"], auth=(DEMO_CLIENT_ID, "wrong"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert sandbox_clean.grant_for_token(tokens["refresh_token"])["status"] == "active"

    sandbox_clean.settings(revoke_requires_client_auth=False)
    assert _revoke(sandbox_clean, tokens["refresh_token"], auth=None).status_code == 200
    assert sandbox_clean.grant_for_token(tokens["refresh_token"])["status"] == "revoked"


def test_another_clients_token_is_left_alone(sandbox_clean):
    other = sandbox_clean.register_client(
        name="Other", redirect_uris=["https://other.example/cb"], scopes=["zone.read"]
    )
    tokens = sandbox_clean.connect()
    response = _revoke(sandbox_clean, tokens["refresh_token"], auth=(other["client_id"], other["client_secret"]))
    assert response.status_code == 200
    assert sandbox_clean.grant_for_token(tokens["refresh_token"])["status"] == "active"


def test_an_unknown_token_type_hint_is_refused(sandbox_clean):
    response = _revoke(sandbox_clean, "cfort_x", hint="id_token")
    assert response.status_code == 400 and response.json()["error"] == "unsupported_token_type"


def test_userinfo_returns_only_sub(sandbox_clean):
    tokens = sandbox_clean.connect()
    response = requests.get(
        f"{sandbox_clean.base_url}/oauth2/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert response.status_code == 200
    assert response.json() == {"sub": ALICE_ID}
    refused = requests.get(f"{sandbox_clean.base_url}/oauth2/userinfo", headers={"Authorization": "Bearer cfoat_x"})
    assert refused.status_code == 401
    assert "invalid_token" in refused.headers["WWW-Authenticate"]


def test_the_discovery_document_names_the_endpoints(sandbox_clean):
    doc = requests.get(f"{sandbox_clean.base_url}/.well-known/openid-configuration").json()
    issuer = sandbox_clean.issuer
    assert doc["issuer"] == issuer
    assert doc["authorization_endpoint"] == f"{issuer}/oauth2/auth"
    assert doc["token_endpoint"] == f"{issuer}/oauth2/token"
    assert doc["revocation_endpoint"] == f"{issuer}/oauth2/revoke"
    assert doc["userinfo_endpoint"] == f"{issuer}/oauth2/userinfo"
    assert doc["jwks_uri"] == f"{issuer}/.well-known/jwks.json"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert set(doc["token_endpoint_auth_methods_supported"]) == {"client_secret_basic", "client_secret_post"}
    assert doc["authorization_response_iss_parameter_supported"] is True
    assert "offline_access" in doc["scopes_supported"]
    assert requests.get(doc["jwks_uri"]).json() == {"keys": []}
