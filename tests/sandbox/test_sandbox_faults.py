"""Fault injection: each fault does what it says and changes nothing it should not."""

from __future__ import annotations

import time

import pytest
import requests

from cloudflare_sandbox.seed import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from cloudflare_sandbox.testing import SandboxError, refresh_tokens, sha256_hex

AUTH = (DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)


def _zones(sandbox, access_token):
    return requests.get(f"{sandbox.api_url}/zones", headers={"Authorization": f"Bearer {access_token}"})


def test_latency_is_added_only_where_asked(sandbox_clean):
    minted = sandbox_clean.mint_grants()[0]
    sandbox_clean.set_faults(latency_ms=400, latency_endpoints=["token"])
    started = time.monotonic()
    assert refresh_tokens(sandbox_clean.base_url, minted["refresh_token"]).status_code == 200
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    assert _zones(sandbox_clean, minted["access_token"]).status_code in (200, 403)
    assert time.monotonic() - started < 0.35


def test_a_5xx_rate_answers_500_502_or_503_and_changes_nothing(sandbox_clean):
    minted = sandbox_clean.mint_grants()[0]
    sandbox_clean.set_faults(error_5xx_rate=1.0, seed=7)
    statuses = set()
    for _ in range(12):
        response = refresh_tokens(sandbox_clean.base_url, minted["refresh_token"])
        statuses.add(response.status_code)
        if response.status_code == 502:
            assert response.headers["Content-Type"].startswith("text/html")
        else:
            assert response.json()["error"] in ("server_error", "temporarily_unavailable")
    assert statuses <= {500, 502, 503} and len(statuses) >= 2
    api = _zones(sandbox_clean, minted["access_token"])
    assert api.status_code in (500, 502, 503)
    grant = sandbox_clean.grant(minted["grant_id"])
    assert grant["refresh_count"] == 0 and grant["status"] == "active"
    assert grant["current_refresh_token_sha256"] == sha256_hex(minted["refresh_token"])

    sandbox_clean.clear_faults()
    assert refresh_tokens(sandbox_clean.base_url, minted["refresh_token"]).status_code == 200


def test_a_5xx_rate_between_zero_and_one_fails_some_requests(sandbox_clean):
    minted = sandbox_clean.mint_grants()[0]
    sandbox_clean.set_faults(error_5xx_rate=0.5, error_5xx_endpoints=["api"], seed=3)
    statuses = [_zones(sandbox_clean, minted["access_token"]).status_code for _ in range(40)]
    failures = sum(s >= 500 for s in statuses)
    assert 5 < failures < 35
    assert set(statuses) <= {200, 500, 502, 503}


def test_a_429_storm_answers_429_with_retry_after(sandbox_clean):
    minted = sandbox_clean.mint_grants()[0]
    sandbox_clean.set_faults(storm_429=True, retry_after=90)
    for response in (
        refresh_tokens(sandbox_clean.base_url, minted["refresh_token"]),
        _zones(sandbox_clean, minted["access_token"]),
    ):
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "90"
        assert response.json()["errors"][0]["code"] == 971
    assert sandbox_clean.grant(minted["grant_id"])["refresh_count"] == 0


def test_the_storm_can_target_one_endpoint(sandbox_clean):
    minted = sandbox_clean.mint_grants()[0]
    sandbox_clean.set_faults(storm_429=True, storm_429_endpoints=["api"])
    assert _zones(sandbox_clean, minted["access_token"]).status_code == 429
    assert refresh_tokens(sandbox_clean.base_url, minted["refresh_token"]).status_code == 200


def test_the_token_endpoint_can_answer_an_html_challenge(sandbox_clean):
    minted = sandbox_clean.mint_grants()[0]
    sandbox_clean.set_faults(html_challenge=True)
    response = refresh_tokens(sandbox_clean.base_url, minted["refresh_token"])
    assert response.status_code == 403
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<title>Just a moment...</title>" in response.text
    assert sandbox_clean.grant(minted["grant_id"])["refresh_count"] == 0
    assert _zones(sandbox_clean, minted["access_token"]).status_code == 200


def test_drop_after_rotate_commits_the_rotation_then_drops_the_connection(sandbox_clean):
    minted = sandbox_clean.mint_grants()[0]
    sandbox_clean.set_faults(drop_after_rotate=1)
    with pytest.raises(requests.ConnectionError):
        refresh_tokens(sandbox_clean.base_url, minted["refresh_token"])
    grant = sandbox_clean.grant(minted["grant_id"])
    assert grant["refresh_count"] == 1 and grant["status"] == "active"
    assert grant["current_refresh_token_sha256"] != sha256_hex(minted["refresh_token"])
    assert sandbox_clean.control("GET", "faults")["drop_after_rotate"] == 0
    # the client never saw the new token; retrying with the old one is a reuse
    assert refresh_tokens(sandbox_clean.base_url, minted["refresh_token"]).status_code == 400
    grant = sandbox_clean.grant(minted["grant_id"])
    assert grant["status"] == "revoked" and grant["reuse_count"] == 1


def test_revoke_can_answer_503(sandbox_clean):
    minted = sandbox_clean.mint_grants()[0]
    sandbox_clean.set_faults(revoke_503=True, retry_after=5)
    response = requests.post(
        f"{sandbox_clean.base_url}/oauth2/revoke", data={"token": minted["refresh_token"]}, auth=AUTH
    )
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert sandbox_clean.grant(minted["grant_id"])["status"] == "active"
    assert refresh_tokens(sandbox_clean.base_url, minted["refresh_token"]).status_code == 200

    sandbox_clean.set_faults(revoke_503=0.5, seed=1)
    statuses = {
        requests.post(f"{sandbox_clean.base_url}/oauth2/revoke", data={"token": "cfort_x"}, auth=AUTH).status_code
        for _ in range(20)
    }
    assert statuses == {200, 503}


def test_calls_per_endpoint_are_counted_even_when_faulted(sandbox_clean):
    minted = sandbox_clean.mint_grants()[0]
    sandbox_clean.set_faults(storm_429=True, storm_429_endpoints=["token"])
    refresh_tokens(sandbox_clean.base_url, minted["refresh_token"])
    _zones(sandbox_clean, minted["access_token"])
    calls = sandbox_clean.calls()
    assert calls["token"] == 1 and calls["token:refresh_token"] == 1
    assert calls["api"] == 1 and calls["GET /client/v4/zones"] == 1
    assert calls["fault:429"] == 1
    sandbox_clean.reset_counters()
    assert "token" not in sandbox_clean.calls()


@pytest.mark.parametrize(
    "faults",
    [{"latency_ms": -1}, {"error_5xx_rate": 2}, {"storm_429_endpoints": ["everything"]}, {"unknown": 1}],
)
def test_bad_fault_configurations_are_refused(sandbox_clean, faults):
    with pytest.raises(SandboxError):
        sandbox_clean.set_faults(**faults)


@pytest.mark.parametrize(
    ("mode", "check"),
    [
        ("no_access_token", lambda r: "access_token" not in r.json()),
        ("no_token_type", lambda r: "token_type" not in r.json()),
        ("wrong_token_type", lambda r: r.json()["token_type"] == "mac"),
        ("expires_in_negative", lambda r: r.json()["expires_in"] == -1),
        ("expires_in_huge", lambda r: r.json()["expires_in"] > 10**9),
        ("expires_in_string", lambda r: r.json()["expires_in"] == "3600"),
        ("narrower_scope", lambda r: "zone-settings.read" not in r.json()["scope"].split(" ")),
    ],
)
def test_bad_token_responses_damage_a_processed_answer(sandbox_clean, mode, check):
    minted = sandbox_clean.mint_grants(scopes=["offline_access", "zone.read", "zone-settings.read"])[0]
    sandbox_clean.set_faults(bad_token_response=mode)
    response = refresh_tokens(sandbox_clean.base_url, minted["refresh_token"])
    assert response.status_code == 200
    assert check(response)
    assert sandbox_clean.grant(minted["grant_id"])["refresh_count"] == 1


@pytest.mark.parametrize("mode", ["html_200", "non_json", "empty_body", "error_200", "redirect", "oversized"])
def test_bad_token_responses_can_replace_the_answer_without_processing(sandbox_clean, mode):
    minted = sandbox_clean.mint_grants()[0]
    sandbox_clean.set_faults(bad_token_response=mode)
    response = requests.post(
        sandbox_clean.token_url(),
        data={"grant_type": "refresh_token", "refresh_token": minted["refresh_token"]},
        auth=AUTH,
        allow_redirects=False,
    )
    if mode == "redirect":
        assert response.status_code == 307 and response.headers["Location"].startswith("https://evil.example/")
    else:
        assert response.status_code == 200
    if mode == "oversized":
        assert len(response.content) > 10 * 1024 * 1024
    assert sandbox_clean.grant(minted["grant_id"])["refresh_count"] == 0


def test_revoke_can_answer_400_unsupported_token_type(sandbox_clean):
    minted = sandbox_clean.mint_grants()[0]
    sandbox_clean.set_faults(revoke_400=True)
    response = requests.post(
        f"{sandbox_clean.base_url}/oauth2/revoke", data={"token": minted["refresh_token"]}, auth=AUTH
    )
    assert response.status_code == 400 and response.json()["error"] == "unsupported_token_type"
    assert sandbox_clean.grant(minted["grant_id"])["status"] == "active"


def test_peak_rates_per_ip_and_user_are_recorded_and_the_ip_limit_can_be_enforced(sandbox_clean):
    minted = sandbox_clean.mint_grants()[0]
    sandbox_clean.settings(ip_rate_limit=3)
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {minted['access_token']}"
        statuses = [http.get(f"{sandbox_clean.api_url}/zones").status_code for _ in range(8)]
    assert 429 in statuses
    peaks = sandbox_clean.state()["peaks"]
    assert peaks["ip:127.0.0.1"] >= 4
    assert peaks[f"user:{sandbox_clean.grant(minted['grant_id'])['user_id']}"] >= 1


def test_latency_can_vary_per_request_within_a_range(sandbox_clean):
    minted = sandbox_clean.mint_grants(count=3)
    sandbox_clean.set_faults(latency_ms=200, latency_max_ms=500, latency_endpoints=["token"], seed=3)
    waits = []
    for grant in minted:
        started = time.monotonic()
        assert refresh_tokens(sandbox_clean.base_url, grant["refresh_token"]).status_code == 200
        waits.append(time.monotonic() - started)
    assert all(0.2 <= w < 0.75 for w in waits), waits
    assert max(waits) - min(waits) > 0.005
