"""API v4: envelope, pagination, filters, scope enforcement, account restriction, DNS, rate limit."""

from __future__ import annotations

import pytest
import requests

from cloudflare_sandbox.scopes import CATEGORIES
from cloudflare_sandbox.seed import (
    ACME_CORP_ID,
    ACME_STAGING_ID,
    ALICE_ID,
    BIGSHOP_ID,
    BOB_EMAIL,
    CAROL_EMAIL,
    zone_id,
)
from tests.sandbox.api_client import Api, error_code


def _api(sandbox, **grant) -> Api:
    minted = sandbox.mint_grants(**grant)[0]
    return Api(sandbox, minted["access_token"])


def test_get_user_answers_in_the_cloudflare_envelope(sandbox_clean):
    response = _api(sandbox_clean).get("/user")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["errors"] == [] and body["messages"] == []
    assert body["result"]["id"] == ALICE_ID
    assert body["result"]["email"] == "alice@example.com"
    assert body["result"]["first_name"] == "Alice"


def test_accounts_are_those_chosen_at_consent(sandbox_clean):
    everything = _api(sandbox_clean, user_email=BOB_EMAIL).get("/accounts").json()
    assert {a["id"] for a in everything["result"]} == {ACME_CORP_ID, BIGSHOP_ID}
    assert everything["result_info"]["total_count"] == 2
    assert everything["result"][0]["settings"]["oauth_app_access"] is True

    limited = _api(sandbox_clean, user_email=BOB_EMAIL, accounts=[BIGSHOP_ID])
    assert [a["id"] for a in limited.get("/accounts").json()["result"]] == [BIGSHOP_ID]
    assert limited.get(f"/accounts/{BIGSHOP_ID}").status_code == 200
    hidden = limited.get(f"/accounts/{ACME_CORP_ID}")
    assert hidden.status_code == 404 and error_code(hidden) == 7003


def test_zones_paginate_by_at_most_fifty(sandbox_clean):
    api = _api(sandbox_clean, user_email=BOB_EMAIL, accounts=[BIGSHOP_ID])
    names: list[str] = []
    for page in (1, 2, 3):
        body = api.get("/zones", page=page, per_page=50).json()
        info = body["result_info"]
        assert info == {
            "page": page,
            "per_page": 50,
            "count": [50, 50, 25][page - 1],
            "total_count": 125,
            "total_pages": 3,
        }
        names += [z["name"] for z in body["result"]]
    assert names == [f"bigshop-{i:03d}.com" for i in range(1, 126)]
    assert api.get("/zones", page=4, per_page=50).json()["result"] == []
    assert api.get("/zones", per_page=500).json()["result_info"]["per_page"] == 50
    assert api.get("/zones").json()["result_info"]["per_page"] == 20
    assert api.get("/zones", per_page=1).json()["result_info"]["per_page"] == 5
    bad = api.get("/zones", page="x")
    assert bad.status_code == 400


def test_zone_objects_have_the_documented_fields(sandbox_clean):
    zone = _api(sandbox_clean).get("/zones", name="acme.com").json()["result"][0]
    for field in (
        "id",
        "name",
        "status",
        "account",
        "plan",
        "paused",
        "type",
        "name_servers",
        "created_on",
        "modified_on",
    ):
        assert field in zone
    assert zone["id"] == zone_id("acme.com")
    assert zone["account"] == {"id": ACME_CORP_ID, "name": "Acme Corp"}
    assert zone["plan"]["name"] == "Pro Website"


def test_zone_filters(sandbox_clean):
    bob = _api(sandbox_clean, user_email=BOB_EMAIL)
    assert bob.get("/zones", **{"account.id": ACME_CORP_ID}).json()["result_info"]["total_count"] == 3
    assert bob.get("/zones", **{"account.id": BIGSHOP_ID}).json()["result_info"]["total_count"] == 125
    pending = bob.get("/zones", status="pending", per_page=50).json()
    assert pending["result_info"]["total_count"] == 13  # 12 at Bigshop + acme.io
    assert {z["status"] for z in pending["result"]} == {"pending"}
    assert [z["name"] for z in bob.get("/zones", name="acme.net").json()["result"]] == ["acme.net"]
    assert bob.get("/zones", name="contains:bigshop-12").json()["result_info"]["total_count"] == 6
    alice = _api(sandbox_clean)
    assert alice.get("/zones", **{"account.id": BIGSHOP_ID}).json()["result"] == []


def test_a_grant_sees_only_the_zones_of_its_accounts(sandbox_clean):
    api = _api(sandbox_clean, accounts=[ACME_STAGING_ID])
    assert [z["name"] for z in api.get("/zones").json()["result"]] == ["staging-acme.dev"]
    assert api.get(f"/zones/{zone_id('staging-acme.dev')}").status_code == 200
    for hidden in (zone_id("acme.com"), zone_id("carols-bakery.com"), "0" * 32):
        response = api.get(f"/zones/{hidden}")
        assert response.status_code == 404 and error_code(response) == 7003
        response = api.get(f"/zones/{hidden}/dns_records")
        assert response.status_code == 404


def test_each_endpoint_enforces_its_scope(sandbox_clean):
    api = _api(sandbox_clean, scopes=["offline_access", "zone.read"])
    assert api.get("/zones").status_code == 200
    acme = zone_id("acme.com")
    for method, path, body in (
        ("GET", "/user", None),
        ("GET", "/accounts", None),
        ("GET", f"/zones/{acme}/dns_records", None),
        ("POST", f"/zones/{acme}/dns_records", {"type": "A", "name": "x", "content": "192.0.2.1"}),
        ("POST", f"/zones/{acme}/purge_cache", {"purge_everything": True}),
    ):
        response = api.send(method, path, body)
        assert response.status_code == 403, path
        assert error_code(response) == 10000
    assert api.get("/oauth/scopes").status_code == 200


def test_a_revoked_or_expired_token_gets_9109(sandbox_clean):
    minted = sandbox_clean.mint_grants()[0]
    api = Api(sandbox_clean, minted["access_token"])
    assert api.get("/zones").status_code == 200
    sandbox_clean.revoke_grant(minted["grant_id"])
    response = api.get("/zones")
    assert response.status_code == 403 and error_code(response) == 9109
    assert error_code(Api(sandbox_clean, "cfoat_" + "x" * 43).get("/zones")) == 9109

    expiring = Api(sandbox_clean, sandbox_clean.mint_grants()[0]["access_token"])
    sandbox_clean.advance_clock(3601)
    assert error_code(expiring.get("/zones")) == 9109


@pytest.mark.parametrize("header", ["Token abc", "Bearer", "Bearer a b", "bearer-abc"])
def test_a_malformed_authorization_header_is_400_6003(sandbox_clean, header):
    response = requests.get(f"{sandbox_clean.api_url}/zones", headers={"Authorization": header})
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["code"] == 6003 and error["error_chain"][0]["code"] == 6111


def test_a_missing_authorization_header_is_refused(sandbox_clean):
    response = requests.get(f"{sandbox_clean.api_url}/zones")
    assert response.status_code == 400 and error_code(response) == 9106


def test_unknown_routes_answer_in_the_envelope(sandbox_clean):
    api = _api(sandbox_clean)
    assert error_code(api.get("/nope")) == 7000
    assert api.send("DELETE", "/zones").status_code == 405


def test_dns_records_can_be_listed_created_updated_and_deleted(sandbox_clean):
    api = _api(sandbox_clean, scopes=["zone.read", "dns.read", "dns.write"])
    zid = zone_id("acme.net")
    listed = api.get(f"/zones/{zid}/dns_records").json()
    assert listed["result_info"]["total_count"] == 4
    assert {r["type"] for r in listed["result"]} == {"A", "TXT", "CNAME", "MX"}
    assert api.get(f"/zones/{zid}/dns_records", type="MX").json()["result"][0]["priority"] == 10

    created = api.send(
        "POST",
        f"/zones/{zid}/dns_records",
        {"type": "A", "name": "api", "content": "198.51.100.7", "ttl": 300, "proxied": True},
    )
    assert created.status_code == 200, created.text
    record = created.json()["result"]
    assert record["name"] == "api.acme.net" and record["proxied"] is True and record["ttl"] == 300
    rid = record["id"]
    assert api.get(f"/zones/{zid}/dns_records/{rid}").json()["result"]["content"] == "198.51.100.7"

    patched = api.send("PATCH", f"/zones/{zid}/dns_records/{rid}", {"content": "198.51.100.8"}).json()["result"]
    assert patched["content"] == "198.51.100.8" and patched["ttl"] == 300
    replaced = api.send(
        "PUT", f"/zones/{zid}/dns_records/{rid}", {"type": "TXT", "name": "api.acme.net", "content": "hello"}
    ).json()["result"]
    assert replaced["type"] == "TXT" and replaced["ttl"] == 1 and replaced["proxied"] is False

    deleted = api.send("DELETE", f"/zones/{zid}/dns_records/{rid}")
    assert deleted.json()["result"] == {"id": rid}
    missing = api.get(f"/zones/{zid}/dns_records/{rid}")
    assert missing.status_code == 404 and error_code(missing) == 81044


def test_dns_validation_errors(sandbox_clean):
    api = _api(sandbox_clean, scopes=["dns.read", "dns.write"])
    zid = zone_id("acme.net")
    bad_ip = api.send("POST", f"/zones/{zid}/dns_records", {"type": "A", "name": "x", "content": "not-an-ip"})
    assert bad_ip.status_code == 400
    error = bad_ip.json()["errors"][0]
    assert error["code"] == 1004 and error["error_chain"][0]["code"] == 9005
    duplicate = api.send("POST", f"/zones/{zid}/dns_records", {"type": "TXT", "name": "@", "content": "v=spf1 -all"})
    assert error_code(duplicate) == 81058
    conflict = api.send("POST", f"/zones/{zid}/dns_records", {"type": "A", "name": "www", "content": "192.0.2.9"})
    assert error_code(conflict) == 81053
    malformed = api.http.post(
        f"{api.base}/zones/{zid}/dns_records", data="{not json", headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400 and error_code(malformed) == 6007


def test_purge_cache_accepts_exactly_one_kind(sandbox_clean):
    api = _api(sandbox_clean, scopes=["cache.purge"], user_email=CAROL_EMAIL)
    zid = zone_id("carols-bakery.com")
    response = api.send("POST", f"/zones/{zid}/purge_cache", {"purge_everything": True})
    assert response.status_code == 200 and response.json()["result"] == {"id": zid}
    files = api.send("POST", f"/zones/{zid}/purge_cache", {"files": ["https://carols-bakery.com/a.css"]})
    assert files.status_code == 200
    for body in ({}, {"purge_everything": False}, {"files": [], "tags": ["a"]}, {"hosts": "x"}):
        bad = api.send("POST", f"/zones/{zid}/purge_cache", body)
        assert bad.status_code == 400 and error_code(bad) == 1012
    purges = [p for p in sandbox_clean.control("GET", "purges") if p["zone_id"] == zid]
    assert purges[-2]["body"] == {"purge_everything": True}


def test_the_scope_catalogue_lists_dot_style_scopes_with_names_and_categories(sandbox_clean):
    body = _api(sandbox_clean).get("/oauth/scopes").json()
    scopes = {s["id"]: s for s in body["result"]}
    assert len(scopes) >= 30
    assert scopes["user-details.read"] == {
        "id": "user-details.read",
        "name": "User Details Read",
        "category": "account_and_billing",
        "scopes": [],
    }
    assert scopes["dns.write"]["name"] == "DNS Write"
    assert "dns.edit" not in scopes
    assert all(":" not in s and s.islower() for s in scopes)
    assert {s["category"] for s in scopes.values()} <= set(CATEGORIES)


def test_legacy_api_tokens_verify_and_work_with_their_permissions(sandbox_clean):
    issued = sandbox_clean.create_api_token(
        user_email=BOB_EMAIL, name="migration", permissions=["Zone Read"], accounts=[BIGSHOP_ID]
    )
    assert issued["token"].startswith("cfut_") and len(issued["token"]) == 45
    api = Api(sandbox_clean, issued["token"])
    verify = api.get("/user/tokens/verify")
    assert verify.status_code == 200
    assert verify.json()["result"] == {"id": issued["id"], "status": "active"}
    assert api.get("/zones").json()["result_info"]["total_count"] == 125
    assert error_code(api.get("/user")) == 10000

    oauth = _api(sandbox_clean)
    refused = oauth.get("/user/tokens/verify")
    assert refused.status_code == 401 and error_code(refused) == 1000

    disabled = sandbox_clean.create_api_token(user_email=BOB_EMAIL, permissions=["zone.read"], status="disabled")
    assert Api(sandbox_clean, disabled["token"]).get("/user/tokens/verify").status_code == 401
    assert error_code(Api(sandbox_clean, disabled["token"]).get("/zones")) == 9109


def test_the_rate_limit_is_per_cloudflare_user_with_ratelimit_headers(sandbox_clean):
    sandbox_clean.settings(rate_limit=5, rate_window=60)
    first = _api(sandbox_clean, user_email=CAROL_EMAIL)
    second = _api(sandbox_clean, user_email=CAROL_EMAIL)
    other_user = _api(sandbox_clean, user_email=BOB_EMAIL)
    for remaining in (4, 3, 2):
        response = first.get("/zones")
        assert response.status_code == 200
        policy, reset = response.headers["Ratelimit"].rsplit(";t=", 1)
        assert policy == f'"default";r={remaining}' and 0 < int(reset) <= 60
        assert response.headers["Ratelimit-Policy"] == '"default";q=5;w=60'
    assert second.get("/zones").status_code == 200  # same user, another token: same budget
    assert second.get("/zones").headers["Ratelimit"].startswith('"default";r=0;')

    limited = first.get("/zones")
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) > 0
    assert limited.json()["errors"] == [
        {"code": 971, "message": "Please wait and consider throttling your request speed"}
    ]
    assert second.get("/user").status_code == 429
    assert other_user.get("/zones").status_code == 200

    sandbox_clean.advance_clock(61)
    assert first.get("/zones").status_code == 200
