"""Token endpoint: code exchange, PKCE, client authentication, refresh rotation and reuse."""

from __future__ import annotations

import re
import threading

import pytest
import requests

from cloudflare_sandbox.seed import BOB_EMAIL, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_REDIRECT_URIS
from cloudflare_sandbox.testing import (
    exchange_code,
    pkce_pair,
    refresh_tokens,
    run_authorization,
    sha256_hex,
)

CALLBACK = DEMO_REDIRECT_URIS[0]


def _code(sandbox, *, scope=None, redirect_uri=CALLBACK, client_id=DEMO_CLIENT_ID, email="alice@example.com"):
    verifier, challenge = pkce_pair()
    url = sandbox.authorize_url(client_id=client_id, redirect_uri=redirect_uri, scope=scope, code_challenge=challenge)
    result = run_authorization(url, email=email)
    return result.params["code"], verifier


def _zones(sandbox, access_token):
    return requests.get(f"{sandbox.api_url}/zones", headers={"Authorization": f"Bearer {access_token}"})


def _assert_invalid_grant(response, status=400):
    assert response.status_code == status, response.text
    assert response.json()["error"] == "invalid_grant"
    assert response.json()["error_description"]


def test_the_code_exchange_returns_bearer_tokens_with_the_granted_scope(sandbox_clean):
    code, verifier = _code(sandbox_clean)
    response = exchange_code(sandbox_clean.base_url, code, verifier=verifier)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert re.fullmatch(r"cfoat_[A-Za-z0-9_-]{43}", body["access_token"])
    assert re.fullmatch(r"cfort_[A-Za-z0-9_-]{43}", body["refresh_token"])
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert "offline_access" in body["scope"].split(" ")
    grant = sandbox_clean.grant_for_token(body["access_token"])
    assert grant["status"] == "active"
    assert grant["current_refresh_token_sha256"] == sha256_hex(body["refresh_token"])
    assert grant["scopes"] == body["scope"].split(" ")


def test_client_secret_post_is_accepted_too(sandbox_clean):
    code, verifier = _code(sandbox_clean)
    response = exchange_code(sandbox_clean.base_url, code, verifier=verifier, auth_method="post")
    assert response.status_code == 200
    refreshed = refresh_tokens(sandbox_clean.base_url, response.json()["refresh_token"], auth_method="post")
    assert refreshed.status_code == 200


def test_expires_in_follows_the_access_ttl_setting(sandbox_clean):
    sandbox_clean.settings(access_ttl=120)
    code, verifier = _code(sandbox_clean)
    tokens = exchange_code(sandbox_clean.base_url, code, verifier=verifier).json()
    assert tokens["expires_in"] == 120
    sandbox_clean.advance_clock(121)
    assert _zones(sandbox_clean, tokens["access_token"]).json()["errors"][0]["code"] == 9109


def test_no_refresh_token_without_offline_access(sandbox_clean):
    code, verifier = _code(sandbox_clean, scope="user-details.read zone.read")
    body = exchange_code(sandbox_clean.base_url, code, verifier=verifier).json()
    assert "refresh_token" not in body
    assert body["scope"] == "user-details.read zone.read"
    assert sandbox_clean.grant_for_token(body["access_token"])["current_refresh_token_sha256"] is None


def test_it_revokes_the_tokens_issued_for_a_code_when_the_code_is_reused(sandbox_clean):
    code, verifier = _code(sandbox_clean)
    first = exchange_code(sandbox_clean.base_url, code, verifier=verifier)
    assert first.status_code == 200
    assert _zones(sandbox_clean, first.json()["access_token"]).status_code == 200

    second = exchange_code(sandbox_clean.base_url, code, verifier=verifier)
    _assert_invalid_grant(second)
    grant = sandbox_clean.grant_for_token(first.json()["access_token"])
    assert grant["status"] == "revoked" and grant["revoked_reason"] == "code_reuse"
    assert _zones(sandbox_clean, first.json()["access_token"]).json()["errors"][0]["code"] == 9109
    _assert_invalid_grant(refresh_tokens(sandbox_clean.base_url, first.json()["refresh_token"]))


def test_a_code_expires_after_ten_minutes(sandbox_clean):
    young_code, young_verifier = _code(sandbox_clean)
    old_code, old_verifier = _code(sandbox_clean)
    sandbox_clean.advance_clock(599)
    assert exchange_code(sandbox_clean.base_url, young_code, verifier=young_verifier).status_code == 200
    sandbox_clean.advance_clock(2)
    _assert_invalid_grant(exchange_code(sandbox_clean.base_url, old_code, verifier=old_verifier))


def test_the_code_ttl_is_a_setting(sandbox_clean):
    sandbox_clean.settings(code_ttl=5)
    code, verifier = _code(sandbox_clean)
    sandbox_clean.advance_clock(6)
    _assert_invalid_grant(exchange_code(sandbox_clean.base_url, code, verifier=verifier))


def test_the_pkce_verifier_must_match_the_challenge(sandbox_clean):
    code, verifier = _code(sandbox_clean)
    other_verifier, _ = pkce_pair()
    _assert_invalid_grant(exchange_code(sandbox_clean.base_url, code, verifier=other_verifier))
    _assert_invalid_grant(exchange_code(sandbox_clean.base_url, code, verifier=None))
    _assert_invalid_grant(exchange_code(sandbox_clean.base_url, code, verifier="short"))
    # failed attempts do not consume the code
    assert exchange_code(sandbox_clean.base_url, code, verifier=verifier).status_code == 200


@pytest.mark.parametrize("redirect_uri", [DEMO_REDIRECT_URIS[1], None, CALLBACK + "x"])
def test_the_token_request_must_repeat_the_exact_redirect_uri(sandbox_clean, redirect_uri):
    code, verifier = _code(sandbox_clean)
    _assert_invalid_grant(exchange_code(sandbox_clean.base_url, code, verifier=verifier, redirect_uri=redirect_uri))


def test_a_code_cannot_be_redeemed_by_another_client(sandbox_clean):
    other = sandbox_clean.register_client(name="Other", redirect_uris=[CALLBACK], scopes=["zone.read"])
    code, verifier = _code(sandbox_clean)
    response = exchange_code(
        sandbox_clean.base_url,
        code,
        verifier=verifier,
        client_id=other["client_id"],
        client_secret=other["client_secret"],
    )
    _assert_invalid_grant(response)


@pytest.mark.parametrize("auth_method", ["basic", "post"])
def test_wrong_client_credentials_are_invalid_client_401(sandbox_clean, auth_method):
    code, verifier = _code(sandbox_clean)
    for client_id, secret in ((DEMO_CLIENT_ID, "wrong-secret"), ("no-such-client", DEMO_CLIENT_SECRET)):
        response = exchange_code(
            sandbox_clean.base_url,
            code,
            verifier=verifier,
            client_id=client_id,
            client_secret=secret,
            auth_method=auth_method,
        )
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"
        assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_missing_client_credentials_are_invalid_request(sandbox_clean):
    code, verifier = _code(sandbox_clean)
    response = exchange_code(sandbox_clean.base_url, code, verifier=verifier, auth_method="none")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_a_registered_authentication_method_is_enforced(sandbox_clean):
    client = sandbox_clean.register_client(
        name="Basic only",
        redirect_uris=[CALLBACK],
        scopes=["offline_access", "zone.read"],
        token_endpoint_auth_method="client_secret_basic",
    )
    code, verifier = _code(sandbox_clean, client_id=client["client_id"], scope="offline_access zone.read")
    response = exchange_code(
        sandbox_clean.base_url,
        code,
        verifier=verifier,
        client_id=client["client_id"],
        client_secret=client["client_secret"],
        auth_method="post",
    )
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_other_grant_types_and_json_bodies_are_refused(sandbox_clean):
    url = sandbox_clean.token_url()
    auth = (DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
    response = requests.post(url, data={"grant_type": "client_credentials"}, auth=auth)
    assert response.status_code == 400 and response.json()["error"] == "unsupported_grant_type"
    response = requests.post(url, json={"grant_type": "refresh_token", "refresh_token": "x"}, auth=auth)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    response = requests.get(url)
    assert response.status_code == 405


def test_refresh_rotates_both_tokens_and_kills_the_previous_access_token(sandbox_clean):
    tokens = sandbox_clean.connect()
    response = refresh_tokens(sandbox_clean.base_url, tokens["refresh_token"])
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    fresh = response.json()
    assert fresh["refresh_token"] != tokens["refresh_token"]
    assert fresh["access_token"] != tokens["access_token"]
    assert fresh["scope"] == tokens["scope"]
    grant = sandbox_clean.grant_for_token(fresh["refresh_token"])
    assert grant["current_refresh_token_sha256"] == sha256_hex(fresh["refresh_token"])
    assert grant["refresh_count"] == 1 and grant["reuse_count"] == 0
    assert _zones(sandbox_clean, fresh["access_token"]).status_code == 200
    assert _zones(sandbox_clean, tokens["access_token"]).json()["errors"][0]["code"] == 9109


def test_the_previous_access_token_can_outlive_a_refresh_when_configured(sandbox_clean):
    sandbox_clean.settings(refresh_revokes_old_access=False)
    tokens = sandbox_clean.connect()
    assert refresh_tokens(sandbox_clean.base_url, tokens["refresh_token"]).status_code == 200
    assert _zones(sandbox_clean, tokens["access_token"]).status_code == 200


def test_it_revokes_the_grant_when_a_rotated_refresh_token_is_reused(sandbox_clean):
    tokens = sandbox_clean.connect()
    fresh = refresh_tokens(sandbox_clean.base_url, tokens["refresh_token"]).json()

    _assert_invalid_grant(refresh_tokens(sandbox_clean.base_url, tokens["refresh_token"]))
    grant = sandbox_clean.grant_for_token(fresh["refresh_token"])
    assert grant["status"] == "revoked" and grant["revoked_reason"] == "refresh_reuse"
    assert grant["reuse_count"] == 1
    assert sandbox_clean.state()["reuse_count"] == 1
    # the whole chain is dead: the newest refresh token and access token too
    _assert_invalid_grant(refresh_tokens(sandbox_clean.base_url, fresh["refresh_token"]))
    assert _zones(sandbox_clean, fresh["access_token"]).json()["errors"][0]["code"] == 9109


def test_the_invalid_grant_status_is_configurable(sandbox_clean):
    sandbox_clean.settings(invalid_grant_status=401)
    tokens = sandbox_clean.connect()
    refresh_tokens(sandbox_clean.base_url, tokens["refresh_token"])
    _assert_invalid_grant(refresh_tokens(sandbox_clean.base_url, tokens["refresh_token"]), status=401)
    _assert_invalid_grant(refresh_tokens(sandbox_clean.base_url, "cfort_unknown"), status=401)


def test_a_grace_period_tolerates_a_retry_with_the_previous_refresh_token(sandbox_clean):
    sandbox_clean.settings(refresh_grace_seconds=30)
    tokens = sandbox_clean.connect()
    first = refresh_tokens(sandbox_clean.base_url, tokens["refresh_token"]).json()
    retry = refresh_tokens(sandbox_clean.base_url, tokens["refresh_token"])
    assert retry.status_code == 200
    grant = sandbox_clean.grant_for_token(first["refresh_token"])
    assert grant["status"] == "active" and grant["reuse_count"] == 0 and grant["grace_count"] == 1
    assert grant["current_refresh_token_sha256"] == sha256_hex(retry.json()["refresh_token"])
    assert sha256_hex(first["refresh_token"]) in grant["active_refresh_token_sha256s"]

    sandbox_clean.advance_clock(31)
    _assert_invalid_grant(refresh_tokens(sandbox_clean.base_url, tokens["refresh_token"]))
    grant = sandbox_clean.grant(grant["id"])
    assert grant["status"] == "revoked" and grant["revoked_reason"] == "refresh_reuse"


def test_without_rotation_the_refresh_token_stays_valid(sandbox_clean):
    sandbox_clean.settings(rotate_refresh_tokens=False)
    tokens = sandbox_clean.connect()
    for _ in range(3):
        response = refresh_tokens(sandbox_clean.base_url, tokens["refresh_token"])
        assert response.status_code == 200
        assert "refresh_token" not in response.json()
    grant = sandbox_clean.grant_for_token(tokens["refresh_token"])
    assert grant["status"] == "active" and grant["refresh_count"] == 3
    assert grant["current_refresh_token_sha256"] == sha256_hex(tokens["refresh_token"])


def test_a_refresh_token_is_bound_to_its_client(sandbox_clean):
    other = sandbox_clean.register_client(name="Other", redirect_uris=[CALLBACK], scopes=["zone.read"])
    tokens = sandbox_clean.connect()
    response = refresh_tokens(
        sandbox_clean.base_url,
        tokens["refresh_token"],
        client_id=other["client_id"],
        client_secret=other["client_secret"],
    )
    _assert_invalid_grant(response)
    assert sandbox_clean.grant_for_token(tokens["refresh_token"])["status"] == "active"


def test_refresh_tokens_expire_after_the_refresh_ttl(sandbox_clean):
    sandbox_clean.settings(refresh_ttl=100)
    tokens = sandbox_clean.connect()
    sandbox_clean.advance_clock(101)
    _assert_invalid_grant(refresh_tokens(sandbox_clean.base_url, tokens["refresh_token"]))


def test_ten_concurrent_refreshes_of_one_token_give_one_success_and_revoke_the_grant(sandbox_clean):
    tokens = sandbox_clean.connect(email=BOB_EMAIL)
    barrier = threading.Barrier(10)
    statuses: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        with requests.Session() as http:
            barrier.wait()
            response = refresh_tokens(sandbox_clean.base_url, tokens["refresh_token"], session=http)
            with lock:
                statuses.append(response.status_code)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(statuses) == [200] + [400] * 9
    grant = sandbox_clean.grant_for_token(tokens["refresh_token"])
    assert grant["status"] == "revoked" and grant["revoked_reason"] == "refresh_reuse"
    assert grant["reuse_count"] == 9 and grant["refresh_count"] == 1
    state = sandbox_clean.state()
    assert state["reuse_count"] == 9
    assert state["calls"]["token:refresh_token"] == 10
