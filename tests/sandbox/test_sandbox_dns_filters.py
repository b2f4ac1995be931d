"""DNS list filters, record comment / tags / settings, through the official ``cloudflare`` SDK (v5)."""

from __future__ import annotations

import uuid

import cloudflare
import pytest
import requests

SCOPES = ["offline_access", "zone.read", "dns.read", "dns.write"]


@pytest.fixture(scope="module")
def dns_zone(sandbox):
    """A zone of its own with known records, and an SDK client for it."""
    suffix = uuid.uuid4().hex[:8]
    email = f"filters-{suffix}@example.com"
    user = sandbox.add_user(email=email, accounts=[{"name": f"Filters {suffix}", "zones": [f"filters-{suffix}.com"]}])
    zone = user["accounts"][0]["zones"][0]
    token = sandbox.mint_grants(user_email=email, scopes=SCOPES)[0]["access_token"]
    client = cloudflare.Cloudflare(api_token=token, base_url=sandbox.api_url, max_retries=0)
    for existing in client.dns.records.list(zone_id=zone["id"]):
        client.dns.records.delete(existing.id, zone_id=zone["id"])
    name = zone["name"]
    specs = [
        {"type": "A", "name": f"www.{name}", "content": "192.0.2.10", "proxied": True, "comment": "web frontend"},
        {"type": "A", "name": f"api.{name}", "content": "192.0.2.20", "tags": ["team:backend", "env:prod"]},
        {"type": "TXT", "name": f"_verify.{name}", "content": "verify=abc123", "comment": "Search console"},
        {"type": "TXT", "name": name, "content": "v=spf1 include:mail.example ~all", "tags": ["env:staging"]},
        {
            "type": "CNAME",
            "name": f"shop.{name}",
            "content": "shops.example.net",
            "ttl": 300,
            "settings": {"flatten_cname": True},
        },
    ]
    for spec in specs:
        client.dns.records.create(zone_id=zone["id"], ttl=spec.pop("ttl", 1), **spec)
    yield client, zone
    client.close()


def _names(client, zone, **params) -> list[str]:
    return sorted(r.name.split(".")[0] for r in client.dns.records.list(zone_id=zone["id"], **params))


def test_name_filters_match_exact_contains_startswith_endswith(dns_zone):
    client, zone = dns_zone
    assert _names(client, zone, name={"exact": f"www.{zone['name']}"}) == ["www"]
    assert _names(client, zone, name={"exact": f"WWW.{zone['name'].upper()}"}) == ["www"]
    assert _names(client, zone, name={"contains": "hop"}) == ["shop"]
    assert _names(client, zone, name={"startswith": "_ver"}) == ["_verify"]
    assert _names(client, zone, name={"endswith": f"i.{zone['name']}"}) == ["api"]


def test_content_filters_match_exact_contains_startswith_endswith(dns_zone):
    client, zone = dns_zone
    assert _names(client, zone, content={"exact": "192.0.2.20"}) == ["api"]
    assert _names(client, zone, content={"contains": "include:mail"}) == [zone["name"].split(".")[0]]
    assert _names(client, zone, content={"startswith": "192.0.2."}) == ["api", "www"]
    assert _names(client, zone, content={"endswith": ".net"}) == ["shop"]


def test_type_and_proxied_filters(dns_zone):
    client, zone = dns_zone
    assert _names(client, zone, type="TXT") == sorted(["_verify", zone["name"].split(".")[0]])
    assert _names(client, zone, proxied=True) == ["www"]
    assert _names(client, zone, type="A", proxied=False) == ["api"]


def test_match_any_is_or_and_match_all_is_and(dns_zone):
    client, zone = dns_zone
    both = {"name": {"startswith": "www"}, "content": {"exact": "192.0.2.20"}}
    assert _names(client, zone, **both) == []
    assert _names(client, zone, match="all", **both) == []
    assert _names(client, zone, match="any", **both) == ["api", "www"]


def test_tag_filters_and_tag_match(dns_zone):
    client, zone = dns_zone
    assert _names(client, zone, tag={"exact": "env:prod"}) == ["api"]
    assert _names(client, zone, tag={"exact": "ENV:PROD"}) == ["api"]
    assert _names(client, zone, tag={"present": "env"}) == sorted(["api", zone["name"].split(".")[0]])
    assert _names(client, zone, tag={"contains": "team:ack"}) == ["api"]
    assert _names(client, zone, tag={"startswith": "env:stag"}) == [zone["name"].split(".")[0]]
    assert _names(client, zone, tag={"endswith": "env:od"}) == ["api"]
    assert len(_names(client, zone, tag={"absent": "env"})) == 3
    # Repeated tag filters: SDK sends one value per key, so combine two keys over HTTP.
    raw = requests.get(
        f"{client.base_url}zones/{zone['id']}/dns_records",
        params=[("tag.exact", "env:prod"), ("tag.exact", "env:staging"), ("tag_match", "any")],
        headers={"Authorization": f"Bearer {client.api_token}"},
        timeout=30,
    ).json()
    assert len(raw["result"]) == 2


def test_comment_filters(dns_zone):
    client, zone = dns_zone
    assert _names(client, zone, comment={"exact": "web frontend"}) == ["www"]
    assert _names(client, zone, comment={"contains": "CONSOLE"}) == ["_verify"]
    assert _names(client, zone, comment={"startswith": "web"}) == ["www"]
    assert _names(client, zone, comment={"endswith": "console"}) == ["_verify"]
    assert _names(client, zone, comment={"present": "1"}) == ["_verify", "www"]
    assert len(_names(client, zone, comment={"absent": "1"})) == 3


def test_search_looks_at_name_content_comment_and_tags(dns_zone):
    client, zone = dns_zone
    assert _names(client, zone, search="frontend") == ["www"]
    assert _names(client, zone, search="backend") == ["api"]
    assert _names(client, zone, search="shops.example") == ["shop"]


def test_order_direction_and_pagination(dns_zone):
    client, zone = dns_zone
    by_ttl = list(client.dns.records.list(zone_id=zone["id"], order="ttl", direction="desc"))
    assert by_ttl[0].ttl == 300
    by_content = [r.content for r in client.dns.records.list(zone_id=zone["id"], order="content")]
    assert by_content == sorted(by_content)
    page = client.dns.records.list(zone_id=zone["id"], per_page=5, page=1, order="name")
    assert len(page.result) == 5 and page.result_info.total_count == 5
    second = client.dns.records.list(zone_id=zone["id"], per_page=5, page=2)
    assert second.result == []
    names_desc = [r.name for r in client.dns.records.list(zone_id=zone["id"], order="name", direction="desc")]
    assert names_desc == sorted(names_desc, reverse=True)


def test_comment_tags_and_settings_are_kept_and_returned(dns_zone):
    client, zone = dns_zone
    (api,) = client.dns.records.list(zone_id=zone["id"], name={"startswith": "api."})
    assert api.tags == ["team:backend", "env:prod"] and api.comment is None
    (shop,) = client.dns.records.list(zone_id=zone["id"], type="CNAME")
    assert shop.settings.flatten_cname is True
    same = {"zone_id": zone["id"], "name": api.name, "type": "A", "ttl": 1}
    edited = client.dns.records.edit(api.id, comment="backend API", tags=["env:prod"], **same)
    assert edited.comment == "backend API" and edited.tags == ["env:prod"]
    assert edited.content == "192.0.2.20"  # PATCH merges
    fetched = client.dns.records.get(api.id, zone_id=zone["id"])
    assert (fetched.comment, fetched.tags) == ("backend API", ["env:prod"])
    client.dns.records.edit(api.id, comment=None, tags=["team:backend", "env:prod"], **same)


def test_malformed_tags_and_settings_are_refused_without_a_change(dns_zone):
    client, zone = dns_zone
    before = _names(client, zone)
    with pytest.raises(cloudflare.BadRequestError) as bad_tag:
        client.dns.records.create(zone_id=zone["id"], type="A", name="x", content="192.0.2.1", ttl=1, tags=["a b"])
    assert bad_tag.value.body["errors"][0]["code"] == 1004
    with pytest.raises(cloudflare.BadRequestError):
        requests_body = {"type": "A", "name": "x", "content": "192.0.2.1", "settings": {"ipv4_only": "yes"}}
        client.post(f"/zones/{zone['id']}/dns_records", body=requests_body, cast_to=object, options={"max_retries": 0})
    assert _names(client, zone) == before
