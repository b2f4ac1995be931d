"""Ground truth of every write, the "revoke after N API calls" fault, concurrency under latency."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from cloudflare_sandbox.seed import BIGSHOP_ID, BOB_EMAIL, DEMO_CLIENT_ID, zone_id
from cloudflare_sandbox.testing import SandboxError, sha256_hex

ACME = zone_id("acme.com")
SCOPES = ["offline_access", "zone.read", "dns.read", "dns.write", "cache.purge"]


def _mint(sandbox, count: int = 1, **spec):
    return sandbox.mint_grants(scopes=SCOPES, count=count, **spec)


def _purge(sandbox, token: str, zone: str = ACME) -> requests.Response:
    return requests.post(
        f"{sandbox.api_url}/zones/{zone}/purge_cache",
        json={"purge_everything": True},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def _code(response: requests.Response) -> int:
    return response.json()["errors"][0]["code"]


def test_every_write_is_listed_with_the_grant_and_token_that_made_it(sandbox_clean):
    minted = _mint(sandbox_clean)[0]
    since = max([w["id"] for w in sandbox_clean.writes()], default=0)
    headers = {"Authorization": f"Bearer {minted['access_token']}"}
    base = f"{sandbox_clean.api_url}/zones/{ACME}"
    created = requests.post(
        f"{base}/dns_records", json={"type": "TXT", "name": "gt", "content": "v=1"}, headers=headers, timeout=30
    ).json()["result"]
    requests.patch(f"{base}/dns_records/{created['id']}", json={"content": "v=2"}, headers=headers, timeout=30)
    requests.delete(f"{base}/dns_records/{created['id']}", headers=headers, timeout=30)
    _purge(sandbox_clean, minted["access_token"])
    refused = requests.post(f"{base}/dns_records", json={"type": "A", "name": "x", "content": "nope"}, headers=headers)
    assert refused.status_code == 400

    writes = sandbox_clean.writes(since_id=since)
    assert [w["kind"] for w in writes] == ["dns.create", "dns.update", "dns.delete", "purge"]
    assert {w["grant_id"] for w in writes} == {minted["grant_id"]}
    assert {w["token_sha256"] for w in writes} == {sha256_hex(minted["access_token"])}
    assert {w["zone_id"] for w in writes} == {ACME}
    assert writes[0]["after"]["content"] == "v=1" and writes[0]["record_id"] == created["id"]
    assert (writes[1]["before"]["content"], writes[1]["after"]["content"]) == ("v=1", "v=2")
    assert writes[2]["before"]["content"] == "v=2" and writes[2]["after"] is None
    assert writes[3]["body"] == {"purge_everything": True}
    assert sandbox_clean.writes(since_id=since, kind="purge", grant_id=minted["grant_id"]) == writes[3:]


def test_writes_by_a_legacy_api_token_name_the_token_not_a_grant(sandbox_clean):
    token = sandbox_clean.create_api_token(permissions=["Cache Purge"])
    since = max([w["id"] for w in sandbox_clean.writes()], default=0)
    assert _purge(sandbox_clean, token["token"]).status_code == 200
    (write,) = sandbox_clean.writes(since_id=since)
    assert write["grant_id"] is None and write["api_token_id"] == token["id"]


def test_each_grant_is_revoked_after_its_own_nth_call(sandbox_clean):
    first, second = _mint(sandbox_clean, count=2)
    sandbox_clean.revoke_after_calls(3)
    assert [_purge(sandbox_clean, first["access_token"]).status_code for _ in range(3)] == [200, 200, 200]
    after = _purge(sandbox_clean, first["access_token"])
    assert after.status_code == 403 and _code(after) == 9109
    grant = sandbox_clean.grant(first["grant_id"])
    assert grant["status"] == "revoked" and grant["revoked_reason"] == "user"
    # The other grant counts its own calls.
    assert _purge(sandbox_clean, second["access_token"]).status_code == 200
    assert sandbox_clean.grant(second["grant_id"])["status"] == "active"
    assert len(sandbox_clean.writes(grant_id=first["grant_id"], kind="purge")) == 3


def test_only_the_named_grants_are_revoked(sandbox_clean):
    target, bystander = _mint(sandbox_clean, count=2)
    sandbox_clean.revoke_after_calls(1, grants=[target["grant_id"]])
    for _ in range(3):
        assert _purge(sandbox_clean, bystander["access_token"]).status_code == 200
    assert _purge(sandbox_clean, target["access_token"]).status_code == 200
    assert _purge(sandbox_clean, target["access_token"]).status_code == 403
    assert sandbox_clean.grant(bystander["grant_id"])["status"] == "active"


def test_global_count_revokes_the_named_grant_midway_through_other_grants_calls(sandbox_clean):
    a, b, target = _mint(sandbox_clean, count=3)
    sandbox_clean.revoke_after_calls(4, count="global", grants=[target["grant_id"]], revoke_reason="client_deleted")
    assert _purge(sandbox_clean, target["access_token"]).status_code == 200
    for token in (a, b, a):
        assert _purge(sandbox_clean, token["access_token"]).status_code == 200
    refused = _purge(sandbox_clean, target["access_token"])
    assert refused.status_code == 403 and _code(refused) == 9109
    assert sandbox_clean.grant(target["grant_id"])["revoked_reason"] == "client_deleted"
    assert _purge(sandbox_clean, a["access_token"]).status_code == 200  # fires once


def test_concurrent_calls_never_exceed_the_allowed_count(sandbox_clean):
    minted = _mint(sandbox_clean)[0]
    sandbox_clean.revoke_after_calls(5)
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: _purge(sandbox_clean, minted["access_token"]).status_code, range(24)))
    assert statuses.count(200) == 5 and statuses.count(403) == 19
    assert len(sandbox_clean.writes(grant_id=minted["grant_id"])) == 5


def test_bad_revoke_fault_configuration_is_refused(sandbox_clean):
    with pytest.raises(SandboxError, match="revoke_after_count"):
        sandbox_clean.revoke_after_calls(2, count="sometimes")
    assert sandbox_clean.control("GET", "faults")["revoke_after_calls"] == 0


def test_latency_is_served_concurrently(sandbox_clean):
    """32 calls with 150 ms each finish far faster than one after another (4.8 s)."""
    tokens = [m["access_token"] for m in _mint(sandbox_clean, count=32, user_email=BOB_EMAIL, accounts=[BIGSHOP_ID])]
    zones = [zone_id(f"bigshop-{i:03d}.com") for i in range(1, 33)]
    sandbox_clean.set_faults(latency_ms=150, latency_endpoints=["api"])
    sessions = [requests.Session() for _ in tokens]
    started = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        statuses = list(
            pool.map(
                lambda i: (
                    sessions[i]
                    .post(
                        f"{sandbox_clean.api_url}/zones/{zones[i]}/purge_cache",
                        json={"purge_everything": True},
                        headers={"Authorization": f"Bearer {tokens[i]}"},
                        timeout=60,
                    )
                    .status_code
                ),
                range(32),
            )
        )
    elapsed = time.monotonic() - started
    assert statuses == [200] * 32
    assert elapsed < 32 * 0.150 / 2, f"{elapsed:.2f} s: latency is not overlapping"


def test_the_demo_app_asks_for_no_scope_without_an_api_endpoint(sandbox_clean):
    """``analytics.read`` is gone: every scope the demo client may request has an endpoint here."""
    from cloudflare_sandbox.api import ROUTES

    demo = next(c for c in sandbox_clean.control("GET", "clients") if c["client_id"] == DEMO_CLIENT_ID)
    served = {route.scope for route in ROUTES}
    assert "analytics.read" not in demo["optional_scopes"]
    assert set(demo["scopes"]) - {"offline_access"} <= served
    assert set(demo["optional_scopes"]) <= served
