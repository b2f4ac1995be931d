"""API tokens as at Cloudflare: permission groups, policies over zones/accounts/user, deny wins,
token list/get/delete/verify for user- and account-owned tokens (partly through the official SDK)."""

from __future__ import annotations

import cloudflare
import pytest
import requests

from cloudflare_sandbox.api_tokens import ACCOUNT, USER, ZONE, Target, legacy_policies, policies_allow
from cloudflare_sandbox.seed import ACME_CORP_ID, ACME_STAGING_ID, ALICE_ID, BOB_EMAIL, zone_id
from tests.sandbox.api_client import Api, error_code

ACME_COM = zone_id("acme.com")
ACME_NET = zone_id("acme.net")
TXT = {"type": "TXT", "name": "_probe", "content": "hello", "ttl": 120}


def _sdk(sandbox, token: str) -> cloudflare.Cloudflare:
    return cloudflare.Cloudflare(api_token=token, base_url=sandbox.api_url, max_retries=0)


def test_permission_groups_are_listed_in_cloudflares_shape_through_the_sdk(sandbox_clean):
    token = sandbox_clean.create_api_token(permissions=["Zone Read"])["token"]
    groups = list(_sdk(sandbox_clean, token).user.tokens.permission_groups.list())
    by_name = {g.name: g for g in groups}
    for name in ("Zone Read", "Zone Write", "DNS Read", "DNS Write", "Cache Purge", "Zone Settings Read"):
        assert by_name[name].scopes == [ZONE]
    assert by_name["Account Settings Read"].scopes == [ACCOUNT]
    assert by_name["API Tokens Write"].scopes == [USER] and by_name["User Details Read"].scopes == [USER]
    assert "Cloudflare Tunnel Write" in by_name  # no OAuth equivalent: blocks a migration
    assert all(len(g.id) == 32 for g in groups)

    account_groups = list(
        _sdk(sandbox_clean, token).accounts.tokens.permission_groups.list(account_id=ACME_CORP_ID, name="DNS Write")
    )
    assert [g.name for g in account_groups] == ["DNS Write"]


def test_sdk_verifies_a_user_token_and_lists_only_that_users_tokens(sandbox_clean):
    mine = sandbox_clean.create_api_token(
        name="agency tools", permissions=["API Tokens Read", "DNS Read"], zones=[ACME_COM], expires_in=3600
    )
    other = sandbox_clean.create_api_token(name="second", permissions=["Zone Read"])
    bobs = sandbox_clean.create_api_token(user_email=BOB_EMAIL, permissions=["Zone Read"])
    client = _sdk(sandbox_clean, mine["token"])

    verified = client.user.tokens.verify()
    assert verified.id == mine["id"] and verified.status == "active" and verified.expires_on is not None

    listed = {t.id: t for t in client.user.tokens.list(per_page=50)}
    assert {mine["id"], other["id"]} <= set(listed) and bobs["id"] not in listed
    token = listed[mine["id"]]
    assert token.name == "agency tools" and token.status == "active" and token.issued_on is not None
    resources = {}
    for policy in token.policies:
        assert policy.effect == "allow"
        resources.update(policy.resources)
    assert resources == {f"{ZONE}.{ACME_COM}": "*", f"{USER}.{ALICE_ID}": "*"}
    names = {g.name for p in token.policies for g in p.permission_groups}
    assert names == {"API Tokens Read", "DNS Read"}
    assert mine["token"] not in str(token.to_dict())


def test_dns_read_on_one_zone_reads_that_zone_only_and_cannot_write(sandbox_clean):
    issued = sandbox_clean.create_api_token(permissions=["Zone Read", "DNS Read"], zones=[ACME_COM])
    api = Api(sandbox_clean, issued["token"])
    assert api.get(f"/zones/{ACME_COM}/dns_records").status_code == 200
    assert error_code(api.get(f"/zones/{ACME_NET}/dns_records")) == 10000
    assert [z["id"] for z in api.get("/zones").json()["result"]] == [ACME_COM]
    assert error_code(api.send("POST", f"/zones/{ACME_COM}/dns_records", json=TXT)) == 10000
    assert error_code(api.get("/accounts")) == 10000
    assert sandbox_clean.writes(api_token_id=issued["id"]) == []


def test_a_deny_policy_wins_over_an_allow_on_the_whole_account(sandbox_clean):
    issued = sandbox_clean.create_api_token(
        policies=[
            {
                "effect": "allow",
                "permission_groups": ["DNS Write"],
                "resources": {f"{ACCOUNT}.{ACME_CORP_ID}": {f"{ZONE}.*": "*"}},
            },
            {"effect": "deny", "permission_groups": ["DNS Write"], "resources": {f"{ZONE}.{ACME_NET}": "*"}},
        ]
    )
    api = Api(sandbox_clean, issued["token"])
    created = api.send("POST", f"/zones/{ACME_COM}/dns_records", json=TXT)
    assert created.status_code == 200
    assert error_code(api.send("POST", f"/zones/{ACME_NET}/dns_records", json=TXT)) == 10000
    staging_zone = zone_id("staging-acme.dev")
    assert error_code(api.send("POST", f"/zones/{staging_zone}/dns_records", json=TXT)) == 10000
    writes = sandbox_clean.writes(api_token_id=issued["id"])
    assert [(w["kind"], w["zone_id"]) for w in writes] == [("dns.create", ACME_COM)]
    api.send("DELETE", f"/zones/{ACME_COM}/dns_records/{created.json()['result']['id']}")


def test_reading_and_deleting_tokens_needs_the_api_tokens_groups_but_a_token_may_delete_itself(sandbox_clean):
    victim = sandbox_clean.create_api_token(name="victim", permissions=["Zone Read"])
    plain = sandbox_clean.create_api_token(permissions=["Zone Read"])
    reader = sandbox_clean.create_api_token(permissions=["API Tokens Read"])
    writer = sandbox_clean.create_api_token(permissions=["API Tokens Write"])
    bobs = sandbox_clean.create_api_token(user_email=BOB_EMAIL, permissions=["Zone Read"])

    assert error_code(Api(sandbox_clean, plain["token"]).get("/user/tokens")) == 10000
    assert error_code(Api(sandbox_clean, plain["token"]).send("DELETE", f"/user/tokens/{victim['id']}")) == 10000
    assert Api(sandbox_clean, reader["token"]).get(f"/user/tokens/{victim['id']}").json()["result"]["name"] == "victim"
    assert error_code(Api(sandbox_clean, reader["token"]).send("DELETE", f"/user/tokens/{victim['id']}")) == 10000
    assert Api(sandbox_clean, writer["token"]).send("DELETE", f"/user/tokens/{bobs['id']}").status_code == 404

    deleted = Api(sandbox_clean, writer["token"]).send("DELETE", f"/user/tokens/{victim['id']}")
    assert deleted.status_code == 200 and deleted.json()["result"] == {"id": victim["id"]}
    own = Api(sandbox_clean, plain["token"]).send("DELETE", f"/user/tokens/{plain['id']}")
    assert own.status_code == 200

    remaining = {t["id"] for t in sandbox_clean.api_tokens()}
    assert victim["id"] not in remaining and plain["id"] not in remaining and bobs["id"] in remaining
    gone = Api(sandbox_clean, plain["token"])
    assert gone.get("/user/tokens/verify").status_code == 401 and error_code(gone.get("/zones")) == 9109


@pytest.mark.parametrize(
    ("spec", "status"),
    [({"status": "disabled"}, "disabled"), ({"expires_in": -1}, "expired"), ({"status": "expired"}, "expired")],
)
def test_inactive_tokens_fail_verify_and_the_api_or_report_their_status_by_setting(sandbox_clean, spec, status):
    issued = sandbox_clean.create_api_token(permissions=["Zone Read"], **spec)
    api = Api(sandbox_clean, issued["token"])
    refused = api.get("/user/tokens/verify")
    assert refused.status_code == 401 and error_code(refused) == 1000
    assert error_code(api.get("/zones")) == 9109

    sandbox_clean.settings(inactive_token_verify="status")
    reported = api.get("/user/tokens/verify")
    assert reported.status_code == 200 and reported.json()["result"]["status"] == status
    assert error_code(api.get("/zones")) == 9109


def test_a_token_works_from_not_before_on(sandbox_clean):
    issued = sandbox_clean.create_api_token(permissions=["Zone Read"], not_before_in=600)
    api = Api(sandbox_clean, issued["token"])
    assert api.get("/user/tokens/verify").status_code == 401
    assert error_code(api.get("/zones")) == 9109
    sandbox_clean.settings(inactive_token_verify="status")
    early = api.get("/user/tokens/verify").json()["result"]
    assert early["status"] == "active" and early["not_before"]
    sandbox_clean.advance_clock(601)
    assert api.get("/zones").status_code == 200
    last_used = next(t for t in sandbox_clean.api_tokens() if t["id"] == issued["id"])["last_used_on"]
    assert last_used is not None


def test_account_owned_tokens_verify_list_and_reach_only_their_account(sandbox_clean):
    issued = sandbox_clean.create_account_token(
        ACME_CORP_ID, name="ci", permissions=["Zone Read", "Account API Tokens Read"]
    )
    assert issued["token"].startswith("cfat_") and len(issued["token"]) == 45
    client = _sdk(sandbox_clean, issued["token"])
    assert client.accounts.tokens.verify(account_id=ACME_CORP_ID).id == issued["id"]
    assert [t.id for t in client.accounts.tokens.list(account_id=ACME_CORP_ID)] == [issued["id"]]

    api = Api(sandbox_clean, issued["token"])
    assert api.get("/user/tokens/verify").status_code == 401
    assert api.get(f"/accounts/{ACME_STAGING_ID}/tokens/verify").status_code == 401
    zones = {z["name"] for z in api.get("/zones", per_page=50).json()["result"]}
    assert zones == {"acme.com", "acme.net", "acme.io"}
    assert error_code(api.get(f"/accounts/{ACME_STAGING_ID}/tokens")) == 10000

    user_token = sandbox_clean.create_api_token(permissions=["Account API Tokens Write"], accounts=[ACME_CORP_ID])
    deleted = Api(sandbox_clean, user_token["token"]).send("DELETE", f"/accounts/{ACME_CORP_ID}/tokens/{issued['id']}")
    assert deleted.status_code == 200
    assert api.get(f"/accounts/{ACME_CORP_ID}/tokens/verify").status_code == 401


def test_an_oauth_token_keeps_working_and_cannot_manage_api_tokens(sandbox_clean):
    oauth = Api(sandbox_clean, sandbox_clean.mint_grants()[0]["access_token"])
    assert oauth.get(f"/zones/{ACME_NET}/dns_records").status_code == 200
    assert error_code(oauth.get("/user/tokens")) == 10000
    assert oauth.get("/user/tokens/verify").status_code == 401


@pytest.mark.parametrize(
    "spec",
    [
        {"permissions": ["Nonexistent Group"]},
        {"permissions": ["DNS Read"], "zones": [zone_id("carols-bakery.com")]},
        {"policies": [{"permission_groups": ["DNS Read"], "resources": {f"{ACCOUNT}.{ACME_CORP_ID}": "*"}}]},
        {"policies": [{"effect": "maybe", "permission_groups": ["DNS Read"], "resources": {f"{ZONE}.*": "*"}}]},
        {"account_id": ACME_CORP_ID, "permissions": ["User Details Read"]},
        {"permissions": ["Zone Read"], "condition": {"request_ip": {"in": ["not-a-cidr"]}}},
    ],
)
def test_bad_token_specs_are_refused_and_store_nothing(sandbox_clean, spec):
    before = len(sandbox_clean.api_tokens())
    response = requests.post(f"{sandbox_clean.base_url}/__sandbox__/api-tokens", json=spec)
    assert response.status_code == 400 and response.json()["error"]
    assert len(sandbox_clean.api_tokens()) == before


@pytest.mark.parametrize(
    ("request_ip", "allowed"),
    [
        ({"in": ["127.0.0.0/8"]}, True),
        ({"in": ["10.0.0.0/8"]}, False),
        ({"in": ["127.0.0.0/8"], "not_in": ["127.0.0.1/32"]}, False),
    ],
)
def test_a_tokens_ip_condition_is_enforced(sandbox_clean, request_ip, allowed):
    issued = sandbox_clean.create_api_token(permissions=["Zone Read"], condition={"request_ip": request_ip})
    response = Api(sandbox_clean, issued["token"]).get("/zones")
    if allowed:
        assert response.status_code == 200
    else:
        assert response.status_code == 403 and error_code(response) == 9109
        assert response.json()["errors"][0]["message"] == "Cannot use the access token from location: 127.0.0.1"
    shown = next(t for t in sandbox_clean.api_tokens() if t["id"] == issued["id"])
    assert shown["condition"] == {"request_ip": request_ip}


@pytest.mark.parametrize(
    ("path", "body", "kind"),
    [
        ("purge_cache", {"purge_everything": True}, "purge"),
        ("settings/ssl", {"value": "strict"}, "settings.edit"),
    ],
)
def test_zone_level_write_groups_apply_to_their_zones_only(sandbox_clean, path, body, kind):
    group = "Cache Purge" if kind == "purge" else "Zone Settings Write"
    issued = sandbox_clean.create_api_token(permissions=[group], zones=[ACME_COM])
    api = Api(sandbox_clean, issued["token"])
    method = "POST" if kind == "purge" else "PATCH"
    assert api.send(method, f"/zones/{ACME_COM}/{path}", json=body).status_code == 200
    assert error_code(api.send(method, f"/zones/{ACME_NET}/{path}", json=body)) == 10000
    assert [w["zone_id"] for w in sandbox_clean.writes(api_token_id=issued["id"])] == [ACME_COM]
    if kind == "settings.edit":
        api.send(method, f"/zones/{ACME_COM}/{path}", json={"value": "full"})


def test_tokens_stored_with_permissions_only_get_equivalent_policies():
    policies = legacy_policies(["zone.read", "user-details.read"], [ACME_CORP_ID], ALICE_ID)
    assert policies_allow(policies, "zone.read", Target(ZONE, ACME_COM, ACME_CORP_ID))
    assert not policies_allow(policies, "zone.read", Target(ZONE, zone_id("staging-acme.dev"), ACME_STAGING_ID))
    assert not policies_allow(policies, "dns.read", Target(ZONE, ACME_COM, ACME_CORP_ID))
    assert policies_allow(policies, "user-details.read", Target(USER, ALICE_ID))
