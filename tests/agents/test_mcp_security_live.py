"""What the MCP server and the authorization server refuse, live: foreign resources, reused refresh
tokens, revoked connections, bad input. Each refusal leaves nothing written."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
import requests
from django.utils import timezone
from oauth2_provider.models import AccessToken, RefreshToken

from agents.models import AgentConnection
from clients.models import Zone
from operations.models import ActionReadCount, ActionRecord
from tests.agents.conftest import Consent, approve, free_port, staff_browser
from tests.agents.mcp_client import Agent, list_tool_names
from tests.operations.conftest import ALL_SCOPES, api_calls, sandbox_grant

pytestmark = pytest.mark.django_db(transaction=True)

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
def acme_full(cf_sandbox, acme, mfa_manager):
    acme.account_manager = mfa_manager
    acme.save(update_fields=["account_manager"])
    return sandbox_grant(cf_sandbox, client=acme, scopes=ALL_SCOPES)


@pytest.fixture
def connected(portal, acme, acme_full, mfa_manager, cf_sandbox):
    """An agent approved (dynamic registration) for DNS tools on Acme; its live tokens."""
    browser = staff_browser(portal, mfa_manager)
    consent = Consent(
        tools=["portal_clients", "dns_records_list", "dns_record_create", "dns_record_delete"], client_ids=[acme.pk]
    )
    agent = Agent(
        mcp_url=portal.mcp_url,
        redirect_uri=f"http://127.0.0.1:{free_port()}/callback",
        approve=lambda url: approve(browser, url, consent),
    )
    agent.run(list_tool_names)
    agent.browser = browser
    cf_sandbox.reset_counters()
    agent.writes_before = len(cf_sandbox.writes())
    return agent


def _rpc(portal, token, body, *, headers=None):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(
        portal.mcp_url,
        data=data,
        headers={**HEADERS, "Authorization": f"Bearer {token}", **(headers or {})},
        timeout=10,
    )


def _call(name, arguments, rpc_id=1):
    return {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


def _nothing_written(cf_sandbox, agent) -> None:
    assert api_calls(cf_sandbox) == 0
    assert len(cf_sandbox.writes()) == agent.writes_before
    assert not ActionRecord.objects.exists()


def test_the_mcp_server_answers_401_with_the_resource_metadata_and_publishes_it(portal):
    response = requests.post(portal.mcp_url, json=_call("portal_clients", {}), headers=HEADERS, timeout=10)
    assert response.status_code == 401
    assert 'resource_metadata="' in response.headers["WWW-Authenticate"]
    url = re.search(r'resource_metadata="([^"]+)"', response.headers["WWW-Authenticate"]).group(1)
    metadata = requests.get(url, timeout=10).json()
    assert metadata["resource"] == portal.mcp_url and metadata["authorization_servers"] == [portal.site_url]
    server = requests.get(f"{portal.site_url}/.well-known/oauth-authorization-server", timeout=10).json()
    assert server["issuer"] == portal.site_url
    assert server["code_challenge_methods_supported"] == ["S256"]
    assert server["response_types_supported"] == ["code"]
    assert server["authorization_response_iss_parameter_supported"] is True
    assert server["client_id_metadata_document_supported"] is True
    assert server["registration_endpoint"].endswith("/agents/oauth/register/")


def test_a_token_minted_for_another_resource_is_refused(portal, connected, mfa_manager):
    live = AccessToken.objects.get(user=mfa_manager)
    AccessToken.objects.create(
        user=mfa_manager,
        application=live.application,
        token="token-for-another-resource",
        expires=timezone.now() + timedelta(minutes=5),
        scope="mcp",
        resource=["https://other.example/mcp"],
    )
    response = _rpc(portal, "token-for-another-resource", _call("portal_clients", {}))
    assert response.status_code == 401
    # and the authorization server will not mint one: not at the consent page, not at the token endpoint
    page = connected.browser.get(
        connected.authorization_urls[0].replace(
            requests.utils.quote(portal.mcp_url, safe=""), requests.utils.quote("https://other.example/mcp", safe="")
        ),
        timeout=10,
    )
    assert page.status_code == 400 and "only grants access to its MCP server" in page.text
    token = requests.post(
        f"{portal.site_url}/agents/oauth/token/",
        data={
            "grant_type": "refresh_token",
            "refresh_token": connected.storage.tokens.refresh_token,
            "client_id": connected.storage.client_info.client_id,
            "resource": "https://other.example/mcp",
        },
        timeout=10,
    )
    assert token.status_code == 400 and token.json()["error"] == "invalid_target"


def test_a_reused_refresh_token_revokes_the_whole_agent_connection(portal, connected):
    old = connected.storage.tokens.refresh_token
    form = {
        "grant_type": "refresh_token",
        "client_id": connected.storage.client_info.client_id,
        "resource": portal.mcp_url,
    }
    rotated = requests.post(f"{portal.site_url}/agents/oauth/token/", data={**form, "refresh_token": old}, timeout=10)
    assert rotated.status_code == 200, rotated.text
    new_access = rotated.json()["access_token"]
    assert rotated.json()["refresh_token"] != old
    assert _rpc(portal, new_access, _call("portal_clients", {})).status_code == 200

    replay = requests.post(f"{portal.site_url}/agents/oauth/token/", data={**form, "refresh_token": old}, timeout=10)

    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    conn = AgentConnection.objects.get()
    assert conn.revoked_at is not None and conn.revoke_reason == "refresh_reuse"
    assert _rpc(portal, new_access, _call("portal_clients", {})).status_code == 401
    assert not AccessToken.objects.filter(user__isnull=False).exists()
    assert not RefreshToken.objects.filter(revoked__isnull=True).exists()
    fresh = requests.post(
        f"{portal.site_url}/agents/oauth/token/",
        data={**form, "refresh_token": rotated.json()["refresh_token"]},
        timeout=10,
    )
    assert fresh.status_code == 400


def test_revoking_in_the_admin_makes_the_next_call_401(portal, connected):
    token = connected.storage.tokens.access_token
    assert _rpc(portal, token, _call("portal_clients", {})).status_code == 200
    conn = AgentConnection.objects.get()
    changelist = f"{portal.site_url}/admin/agents/agentconnection/"
    page = connected.browser.get(changelist, timeout=10)
    assert page.status_code == 200 and "Ops Assistant" in page.text and "portal_clients" in page.text
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)

    response = connected.browser.post(
        f"{changelist}{conn.pk}/revoke/",
        data={"csrfmiddlewaretoken": csrf, "revoke": conn.pk},
        headers={"Referer": changelist},
        timeout=10,
    )

    assert response.status_code == 200 and "is revoked" in response.text
    conn.refresh_from_db()
    assert conn.revoked_at is not None and conn.revoke_reason == "staff"
    assert _rpc(portal, token, _call("portal_clients", {})).status_code == 401


def test_a_destructive_tool_without_confirm_returns_the_dry_run_and_changes_nothing(
    portal, connected, acme_full, cf_sandbox
):
    zone = Zone.objects.filter(account__grants=acme_full).order_by("name").first()
    created = _rpc(
        portal,
        connected.storage.tokens.access_token,
        _call("dns_record_create", {"zone": zone.name, "type": "TXT", "name": "agent", "content": "v=1"}),
    ).json()["result"]
    assert not created["isError"], created
    record_id = created["structuredContent"]["result"]["after"]["id"]
    cf_sandbox.reset_counters()
    writes_before = len(cf_sandbox.writes())

    dry = _rpc(
        portal,
        connected.storage.tokens.access_token,
        _call("dns_record_delete", {"zone": zone.name, "record_id": record_id}),
    ).json()["result"]

    assert not dry["isError"] and dry["structuredContent"]["dry_run"] is True
    assert dry["structuredContent"]["before"]["id"] == record_id
    assert len(cf_sandbox.writes()) == writes_before
    assert not ActionRecord.objects.filter(action_id="dns.record.delete").exists()

    done = _rpc(
        portal,
        connected.storage.tokens.access_token,
        _call("dns_record_delete", {"zone": zone.name, "record_id": record_id, "confirm": True}),
    ).json()["result"]

    assert not done["isError"], done
    assert len(cf_sandbox.writes()) == writes_before + 1
    record = ActionRecord.objects.get(action_id="dns.record.delete")
    assert record.outcome == "succeeded" and record.actor_via == "agent" and record.actor_label == "Ops Assistant"
    # the client sees it on the portal, like a staff member's change
    from operations.selectors import portal_changes

    assert [r.action_id for r in portal_changes(client_id=record.client_id)][:2] == [
        "dns.record.delete",
        "dns.record.create",
    ]


@pytest.mark.parametrize(
    "case",
    ["malformed_json", "not_json_rpc", "unknown_tool", "unapproved_tool", "schema_breaking", "oversized", "origin"],
)
def test_bad_input_gets_a_clear_error_and_nothing_is_written(portal, connected, acme_full, cf_sandbox, case):
    token = connected.storage.tokens.access_token
    zone = Zone.objects.filter(account__grants=acme_full).order_by("name").first()
    reads_before = ActionReadCount.objects.count()
    if case == "malformed_json":
        response = _rpc(portal, token, b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", ')
        assert response.status_code == 400 and "Parse error" in response.json()["error"]["message"]
    elif case == "not_json_rpc":
        response = _rpc(portal, token, {"hello": "world"})
        assert response.status_code == 400 and response.json()["error"]["code"] in (-32600, -32602)
    elif case == "unknown_tool":
        result = _rpc(portal, token, _call("dns_zone_explode", {})).json()["result"]
        assert result["isError"] and "There is no tool 'dns_zone_explode'" in result["content"][0]["text"]
    elif case == "unapproved_tool":
        result = _rpc(portal, token, _call("cache_purge", {"zone": zone.name, "mode": "everything"})).json()["result"]
        assert result["isError"] and "not approved to use cache_purge" in result["content"][0]["text"]
    elif case == "schema_breaking":
        result = _rpc(
            portal, token, _call("dns_record_create", {"zone": zone.name, "type": "A", "name": "x", "content": "nope"})
        ).json()["result"]
        assert result["isError"] and "IPv4" in result["content"][0]["text"]
        result = _rpc(
            portal, token, _call("dns_record_create", {"zone": zone.name, "type": "TXT", "name": "x", "what": 1})
        ).json()["result"]
        assert result["isError"] and "schema" in result["content"][0]["text"]
    elif case == "oversized":
        padding = "x" * (300 * 1024)
        response = _rpc(
            portal,
            token,
            _call("dns_record_create", {"zone": zone.name, "type": "TXT", "name": "x", "content": padding}),
        )
        assert response.status_code == 413
    elif case == "origin":
        response = _rpc(portal, token, _call("portal_clients", {}), headers={"Origin": "https://evil.example"})
        assert response.status_code == 403
    _nothing_written(cf_sandbox, connected)
    assert ActionReadCount.objects.count() == reads_before
