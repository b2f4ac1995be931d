"""Process lifecycle, persistence, logs, and the user's and client owner's side of Cloudflare."""

from __future__ import annotations

import re
import time

import pytest
import requests

from cloudflare_sandbox.seed import (
    ACME_CORP_ID,
    ALICE_EMAIL,
    BIGSHOP_ID,
    BOB_EMAIL,
    DEMO_CLIENT_ID,
    DEMO_REDIRECT_URIS,
    SANDBOX_PASSWORD,
    account_id,
    stable_id,
    user_id,
    zone_id,
)
from cloudflare_sandbox.testing import (
    SandboxProcess,
    pkce_pair,
    refresh_tokens,
    run_authorization,
    sha256_hex,
)

CALLBACK = DEMO_REDIRECT_URIS[0]


def _api(sandbox, token, path):
    return requests.get(f"{sandbox.api_url}{path}", headers={"Authorization": f"Bearer {token}"})


def test_seed_ids_are_stable_and_computable():
    assert stable_id("x") == "2d711642b726b04401627ca9fbac32f5"
    assert account_id("Acme Corp") == ACME_CORP_ID == stable_id("account:Acme Corp")
    assert user_id("Alice@Example.com") == stable_id("user:alice@example.com")
    assert zone_id("acme.com") == stable_id("zone:acme.com")
    assert re.fullmatch(r"[0-9a-f]{32}", BIGSHOP_ID)


def test_the_control_endpoint_is_404_unless_enabled():
    with SandboxProcess(enable_control=False) as plain:
        for method, path in (
            ("GET", "/__sandbox__/state"),
            ("POST", "/__sandbox__/faults"),
            ("POST", "/__sandbox__/reset"),
        ):
            assert requests.request(method, plain.base_url + path, json={}).status_code == 404
        assert requests.get(f"{plain.base_url}/.well-known/openid-configuration").status_code == 200
        assert "control endpoint disabled" in plain.log_text()


def test_state_survives_a_restart_and_reset_reseeds():
    with SandboxProcess() as process:
        tokens = process.connect()
        process.set_account_oauth_access(BIGSHOP_ID, False)
        grant_id = process.grant_for_token(tokens["refresh_token"])["id"]
        base_url = process.base_url

        process.restart()
        assert process.base_url == base_url
        assert process.grant(grant_id)["status"] == "active"
        assert _api(process, tokens["access_token"], "/zones").status_code == 200
        fresh = refresh_tokens(process.base_url, tokens["refresh_token"])
        assert fresh.status_code == 200
        state = process.state()
        assert [a["oauth_app_access"] for a in state["accounts"] if a["id"] == BIGSHOP_ID] == [False]
        assert len(state["grants"]) == 1
        zones = _api(process, fresh.json()["access_token"], "/zones").json()
        assert zones["result_info"]["total_count"] == 4  # seeded once, not twice

        process.reset()
        assert process.state()["grants"] == []
        assert [a["oauth_app_access"] for a in process.state()["accounts"] if a["id"] == BIGSHOP_ID] == [True]
        assert refresh_tokens(process.base_url, fresh.json()["refresh_token"]).status_code == 400


def test_the_request_log_has_one_line_per_request_and_no_secrets():
    with SandboxProcess(quiet=False) as process:
        tokens = process.connect()
        refreshed = refresh_tokens(process.base_url, tokens["refresh_token"]).json()
        _api(process, refreshed["access_token"], "/zones?per_page=50")
        time.sleep(0.1)
        log = process.log_text()
    lines = log.strip().splitlines()
    assert lines[0].startswith("Cloudflare sandbox listening on http://127.0.0.1:")
    assert "(control endpoint enabled)" in lines[0]
    assert any(re.search(r"GET /oauth2/auth 303\b", line) for line in lines)
    assert any(re.search(r"POST /oauth2/token 200\b", line) for line in lines)
    assert any(re.search(r"GET /client/v4/zones 200\b", line) for line in lines)
    assert "?" not in log
    for secret in (*tokens.values(), refreshed["access_token"], refreshed["refresh_token"], SANDBOX_PASSWORD):
        if isinstance(secret, str) and len(secret) > 20:
            assert secret not in log
    assert "cfoat_" not in log and "cfort_" not in log and "code=" not in log


def _form_value(html: str, name: str) -> str:
    return html.split(f'name="{name}" value="')[1].split('"')[0]


def test_the_user_can_revoke_the_app_from_connected_applications(sandbox_clean):
    first = sandbox_clean.connect(email=BOB_EMAIL)
    second = sandbox_clean.connect(email=BOB_EMAIL)
    browser = requests.Session()
    page = browser.get(f"{sandbox_clean.base_url}/profile/connected-applications", allow_redirects=False)
    assert page.status_code == 303 and page.headers["Location"].startswith("/login?next=")
    browser.post(f"{sandbox_clean.base_url}/login", data={"email": BOB_EMAIL, "password": SANDBOX_PASSWORD})
    page = browser.get(f"{sandbox_clean.base_url}/profile/connected-applications")
    assert "Example Agency Portal" in page.text
    assert f'id="revoke-{DEMO_CLIENT_ID}"' in page.text

    forged = browser.post(
        f"{sandbox_clean.base_url}/profile/connected-applications/revoke",
        data={"client_id": DEMO_CLIENT_ID, "csrf_token": "forged"},
    )
    assert forged.status_code == 403
    assert sandbox_clean.grant_for_token(first["refresh_token"])["status"] == "active"

    response = browser.post(
        f"{sandbox_clean.base_url}/profile/connected-applications/revoke",
        data={"client_id": DEMO_CLIENT_ID, "csrf_token": _form_value(page.text, "csrf_token")},
    )
    assert response.status_code == 200 and 'id="no-apps"' in response.text
    for tokens in (first, second):
        grant = sandbox_clean.grant_for_token(tokens["refresh_token"])
        assert grant["status"] == "revoked" and grant["revoked_reason"] == "user"
        assert refresh_tokens(sandbox_clean.base_url, tokens["refresh_token"]).json()["error"] == "invalid_grant"
        assert _api(sandbox_clean, tokens["access_token"], "/zones").json()["errors"][0]["code"] == 9109


def test_a_control_revocation_is_recorded_as_the_users(sandbox_clean):
    minted = sandbox_clean.mint_grants()[0]
    grant = sandbox_clean.revoke_grant(minted["grant_id"])
    assert grant["status"] == "revoked" and grant["revoked_reason"] == "user"
    assert sandbox_clean.state(status="revoked", client_id=DEMO_CLIENT_ID)["grants"]


def test_switching_off_oauth_access_keeps_existing_grants_and_blocks_new_consents(sandbox_clean):
    email = f"dana-{time.monotonic_ns()}@example.com"
    user = sandbox_clean.add_user(
        email=email, accounts=[{"name": f"Dana Main {email}", "zones": 2}, {"name": f"Dana Side {email}", "zones": 1}]
    )
    main_id, side_id = (a["id"] for a in user["accounts"])
    before = sandbox_clean.connect(email=email)
    sandbox_clean.set_account_oauth_access(side_id, False)

    accounts = _api(sandbox_clean, before["access_token"], "/accounts").json()["result"]
    assert {a["id"] for a in accounts} == {main_id, side_id}
    assert {a["id"]: a["settings"]["oauth_app_access"] for a in accounts}[side_id] is False
    assert _api(sandbox_clean, before["access_token"], "/zones").json()["result_info"]["total_count"] == 3

    _, challenge = pkce_pair()
    url = sandbox_clean.authorize_url(code_challenge=challenge)
    tampered = run_authorization(url, email=email, account_mode="specific", accounts=[side_id])
    assert tampered.status == 400 and tampered.location is None
    assert f'value="{side_id}" disabled' in tampered.response.text

    after = sandbox_clean.connect(email=email)
    assert [a["id"] for a in _api(sandbox_clean, after["access_token"], "/accounts").json()["result"]] == [main_id]
    assert _api(sandbox_clean, after["access_token"], "/zones").json()["result_info"]["total_count"] == 2

    sandbox_clean.set_account_oauth_access(side_id, True)
    assert len(_api(sandbox_clean, after["access_token"], "/accounts").json()["result"]) == 2


def test_the_account_page_switches_oauth_access(sandbox_clean):
    email = f"erin-{time.monotonic_ns()}@example.com"
    user = sandbox_clean.add_user(email=email, accounts=[{"name": f"Erin {email}", "zones": 1}])
    browser = requests.Session()
    browser.post(f"{sandbox_clean.base_url}/login", data={"email": email, "password": SANDBOX_PASSWORD})
    page = browser.get(f"{sandbox_clean.base_url}/profile/accounts")
    response = browser.post(
        f"{sandbox_clean.base_url}/profile/accounts/oauth-access",
        data={
            "account_id": user["accounts"][0]["id"],
            "enabled": "false",
            "csrf_token": _form_value(page.text, "csrf_token"),
        },
    )
    assert response.status_code == 200
    state = sandbox_clean.state()
    assert [a["oauth_app_access"] for a in state["accounts"] if a["id"] == user["accounts"][0]["id"]] == [False]


def test_deleting_the_client_kills_all_its_grants(sandbox_clean):
    client = sandbox_clean.register_client(
        name="Short-lived",
        redirect_uris=[CALLBACK],
        scopes=["offline_access", "zone.read"],
        publisher_domain="short.example",
        domain_verified=False,
    )
    kwargs = {
        "client_id": client["client_id"],
        "client_secret": client["client_secret"],
        "scope": "offline_access zone.read",
    }
    grants = [sandbox_clean.connect(email=email, **kwargs) for email in (ALICE_EMAIL, BOB_EMAIL)]
    result = sandbox_clean.delete_client(client["client_id"])
    assert result["revoked_grants"] == 2
    for tokens in grants:
        grant = sandbox_clean.grant_for_token(tokens["refresh_token"])
        assert grant["status"] == "revoked" and grant["revoked_reason"] == "client_deleted"
        assert _api(sandbox_clean, tokens["access_token"], "/zones").json()["errors"][0]["code"] == 9109
        response = refresh_tokens(
            sandbox_clean.base_url,
            tokens["refresh_token"],
            client_id=client["client_id"],
            client_secret=client["client_secret"],
        )
        assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    _, challenge = pkce_pair()
    page = requests.get(sandbox_clean.authorize_url(client_id=client["client_id"], code_challenge=challenge))
    assert page.status_code == 400


def test_minting_many_grants_is_fast_and_their_tokens_work(sandbox_clean):
    started = time.monotonic()
    minted = sandbox_clean.mint_grants(count=2000, user_email=BOB_EMAIL, accounts=[BIGSHOP_ID])
    assert time.monotonic() - started < 5
    assert len({m["grant_id"] for m in minted}) == 2000
    sample = minted[-1]
    assert sample["refresh_token"].startswith("cfort_") and sample["expires_in"] == 3600
    assert sandbox_clean.grant(sample["grant_id"])["current_refresh_token_sha256"] == sha256_hex(
        sample["refresh_token"]
    )
    assert _api(sandbox_clean, sample["access_token"], "/zones").json()["result_info"]["total_count"] == 125
    assert refresh_tokens(sandbox_clean.base_url, sample["refresh_token"]).status_code == 200
    assert sandbox_clean.mint_grants(scopes=["zone.read"])[0]["refresh_token"] is None


@pytest.mark.parametrize(
    "spec",
    [
        {"client_id": "nope"},
        {"user_email": "nobody@example.com"},
        {"scopes": ["workers-scripts.write"]},
        {"accounts": [BIGSHOP_ID]},  # alice is not a member
        {"count": 0},
    ],
)
def test_minting_refuses_impossible_grants(sandbox_clean, spec):
    with pytest.raises(Exception, match="-> (400|404)"):
        sandbox_clean.mint_grants(**spec)


def test_a_client_registration_is_validated(sandbox_clean):
    for bad in (
        {"name": "x", "redirect_uris": [], "scopes": []},
        {"name": "x", "redirect_uris": ["/relative"], "scopes": []},
        {"name": "x", "redirect_uris": [CALLBACK], "scopes": ["zone:read"]},
        {"name": "x", "redirect_uris": [CALLBACK + "#frag"], "scopes": []},
    ):
        with pytest.raises(Exception, match="-> 400"):
            sandbox_clean.register_client(**bad)
    created = sandbox_clean.register_client(
        client_id="fixed-id-1", client_secret="s3cret", name="Fixed", redirect_uris=[CALLBACK], scopes=["zone.read"]
    )
    assert created == {"client_id": "fixed-id-1", "client_secret": "s3cret", "created": created["created"]}
    listed = {c["client_id"]: c for c in sandbox_clean.control("GET", "clients")}
    assert listed["fixed-id-1"]["visibility"] == "public"
    assert listed[DEMO_CLIENT_ID]["domain_verified"] is True
