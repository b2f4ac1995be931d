"""Zone settings (read and write) and the error-code variants, through the official SDK."""

from __future__ import annotations

import uuid

import cloudflare
import pytest
import requests

from cloudflare_sandbox.seed import zone_id
from cloudflare_sandbox.testing import SandboxError

ACME = zone_id("acme.com")
ACME_NET = zone_id("acme.net")
SETTING_SCOPES = ["zone.read", "zone-settings.read", "zone-settings.write"]


@pytest.fixture(scope="module")
def settings_client_id(sandbox):
    client_id = f"settings-{uuid.uuid4().hex[:8]}"
    sandbox.register_client(
        client_id=client_id,
        name="Settings test app",
        redirect_uris=["http://127.0.0.1:8000/cb/"],
        scopes=["zone.read"],
        optional_scopes=["zone-settings.read", "zone-settings.write", "dns.read"],
    )
    return client_id


def _sdk(sandbox, client_id: str, scopes: list[str]) -> tuple[cloudflare.Cloudflare, dict]:
    minted = sandbox.mint_grants(client_id=client_id, scopes=scopes)[0]
    client = cloudflare.Cloudflare(api_token=minted["access_token"], base_url=sandbox.api_url, max_retries=0)
    return client, minted


def test_settings_are_read_in_cloudflare_shape(sandbox_clean, settings_client_id):
    client, _ = _sdk(sandbox_clean, settings_client_id, SETTING_SCOPES)
    ssl = client.zones.settings.get("ssl", zone_id=ACME_NET)
    assert (ssl.id, ssl.value, ssl.editable) == ("ssl", "full", True)
    ttl = client.zones.settings.get("browser_cache_ttl", zone_id=ACME_NET)
    assert ttl.value == 14400
    listed = client.get(f"/zones/{ACME_NET}/settings", cast_to=object)["result"]
    assert {s["id"] for s in listed} == {
        "always_use_https",
        "browser_cache_ttl",
        "cache_level",
        "development_mode",
        "min_tls_version",
        "security_level",
        "ssl",
    }
    assert all(set(s) >= {"id", "value", "editable", "modified_on"} for s in listed)


def test_a_setting_change_is_kept_and_recorded_with_its_grant(sandbox_clean, settings_client_id):
    sandbox_clean.settings(access_ttl=86400)  # the token must outlive the three hours of development mode
    client, minted = _sdk(sandbox_clean, settings_client_id, SETTING_SCOPES)
    before = client.zones.settings.get("min_tls_version", zone_id=ACME).value
    changed = client.zones.settings.edit("min_tls_version", zone_id=ACME, value="1.2")
    assert changed.value == "1.2" and changed.modified_on is not None
    assert client.zones.settings.get("min_tls_version", zone_id=ACME).value == "1.2"
    (write,) = sandbox_clean.writes(grant_id=minted["grant_id"], kind="settings.edit")
    assert write["setting_id"] == "min_tls_version" and write["zone_id"] == ACME
    assert (write["before"]["value"], write["after"]["value"]) == (before, "1.2")
    dev = client.zones.settings.edit("development_mode", zone_id=ACME, value="on")
    assert dev.value == "on"
    assert client.zones.settings.get("development_mode", zone_id=ACME).time_remaining > 10000
    sandbox_clean.advance_clock(3 * 3600 + 1)
    assert client.zones.settings.get("development_mode", zone_id=ACME).value == "off"


def test_bad_values_and_unknown_settings_are_refused_without_a_change(sandbox_clean, settings_client_id):
    client, minted = _sdk(sandbox_clean, settings_client_id, SETTING_SCOPES)
    with pytest.raises(cloudflare.BadRequestError) as bad:
        client.zones.settings.edit("ssl", zone_id=ACME_NET, value="sometimes")
    assert bad.value.body["errors"][0]["code"] == 1007
    with pytest.raises(cloudflare.BadRequestError):
        client.zones.settings.edit("browser_cache_ttl", zone_id=ACME_NET, value=12345)
    with pytest.raises(cloudflare.NotFoundError):
        client.zones.settings.get("rocket_loader_turbo", zone_id=ACME_NET)
    assert sandbox_clean.writes(grant_id=minted["grant_id"]) == []


def test_settings_need_their_scopes(sandbox_clean, settings_client_id):
    reader, _ = _sdk(sandbox_clean, settings_client_id, ["zone.read", "zone-settings.read"])
    assert reader.zones.settings.get("cache_level", zone_id=ACME_NET).value == "aggressive"
    with pytest.raises(cloudflare.PermissionDeniedError) as refused:
        reader.zones.settings.edit("cache_level", zone_id=ACME_NET, value="basic")
    assert refused.value.body["errors"][0]["code"] == 10000
    blind, _ = _sdk(sandbox_clean, settings_client_id, ["zone.read"])
    with pytest.raises(cloudflare.PermissionDeniedError):
        blind.zones.settings.get("ssl", zone_id=ACME_NET)


def test_missing_scope_answers_9109_like_a_revoked_token_under_the_setting(sandbox_clean, settings_client_id):
    client, minted = _sdk(sandbox_clean, settings_client_id, ["zone.read"])
    sandbox_clean.settings(missing_scope_code=9109)
    with pytest.raises(cloudflare.PermissionDeniedError) as missing:
        client.zones.settings.get("ssl", zone_id=ACME_NET)
    sandbox_clean.revoke_grant(minted["grant_id"])
    with pytest.raises(cloudflare.PermissionDeniedError) as revoked:
        client.zones.get(zone_id=ACME_NET)
    assert missing.value.body == revoked.value.body
    assert missing.value.body["errors"][0]["code"] == 9109


def test_rate_limit_answers_10429_under_the_setting(sandbox_clean, settings_client_id):
    client, _ = _sdk(sandbox_clean, settings_client_id, SETTING_SCOPES)
    sandbox_clean.settings(rate_limit=2, rate_limit_code=10429)
    client.zones.get(zone_id=ACME_NET)
    client.zones.get(zone_id=ACME_NET)
    with pytest.raises(cloudflare.RateLimitError) as limited:
        client.zones.get(zone_id=ACME_NET)
    assert limited.value.body["errors"][0]["code"] == 10429
    assert int(limited.value.response.headers["Retry-After"]) > 0
    sandbox_clean.reset_counters()
    sandbox_clean.set_faults(storm_429=True, retry_after=7)
    storm = requests.get(f"{sandbox_clean.api_url}/zones/{ACME_NET}", timeout=30)
    assert storm.status_code == 429 and storm.json()["errors"][0]["code"] == 10429
    assert storm.headers["Retry-After"] == "7"


def test_unknown_code_variants_are_refused(sandbox_clean):
    with pytest.raises(SandboxError, match="missing_scope_code"):
        sandbox_clean.settings(missing_scope_code=403)
    with pytest.raises(SandboxError, match="rate_limit_code"):
        sandbox_clean.settings(rate_limit_code=429)
