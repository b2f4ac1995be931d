"""Agents through the real `mcp` client against the live portal, its MCP server and the sandbox."""

from __future__ import annotations

import json

import pytest
import requests

from agents.models import AgentConnection
from clients.models import Zone
from operations.models import ActionRecord
from tests.agents.conftest import Consent, approve, staff_browser
from tests.agents.mcp_client import Agent, list_tool_names
from tests.operations.conftest import api_calls, sandbox_grant

pytestmark = pytest.mark.django_db(transaction=True)

READ_SCOPES = ["offline_access", "user-details.read", "account-settings.read", "zone.read", "dns.read"]


@pytest.fixture
def acme_live(cf_sandbox, acme, mfa_manager):
    """Acme, managed by the MFA account manager, with a grant that can read DNS but not write it."""
    acme.account_manager = mfa_manager
    acme.save(update_fields=["account_manager"])
    grant = sandbox_grant(cf_sandbox, client=acme, scopes=READ_SCOPES)
    return grant


def _agent(portal, mfa_manager, consent: Consent, *, metadata_document=None, redirect_uri=None) -> Agent:
    browser = staff_browser(portal, mfa_manager)
    return Agent(
        mcp_url=portal.mcp_url,
        redirect_uri=metadata_document.redirect_uri if metadata_document else redirect_uri,
        client_metadata_url=metadata_document.url if metadata_document else None,
        approve=lambda url: approve(browser, url, consent),
    )


def test_an_agent_with_a_metadata_document_discovers_registers_is_approved_and_sees_only_approved_tools(
    portal, acme, acme_live, mfa_manager, metadata_document, cf_sandbox
):
    consent = Consent(
        tools=["portal_clients", "portal_grants", "dns_records_list", "dns_record_create"], client_ids=[acme.pk]
    )
    agent = _agent(portal, mfa_manager, consent, metadata_document=metadata_document)
    zone = Zone.objects.filter(account__grants=acme_live).order_by("name").first()

    async def flow(session):
        names = await list_tool_names(session)
        listed = await session.call_tool("portal_clients", {})
        grants = await session.call_tool("portal_grants", {})
        records = await session.call_tool("dns_records_list", {"zone": zone.name})
        return names, listed, grants, records

    names, listed, grants, records = agent.run(flow)

    # Discovery: 401 -> protected resource metadata -> authorization server metadata; then the
    # client used its metadata URL as client_id (no registration call), which the portal fetched.
    seen = " ".join(agent.requests_seen)
    assert "/.well-known/oauth-protected-resource/mcp" in seen
    assert f"{portal.site_url}/.well-known/oauth-authorization-server" in seen
    assert "/agents/oauth/register/" not in seen
    assert metadata_document.fetches == ["/agent/client.json"]
    assert f"client_id={requests.utils.quote(metadata_document.url, safe='')}" in agent.authorization_urls[0]
    # The consent page said who asks, from where, and what in plain words, grouped by kind.
    page = consent.pages[0]
    assert "Ops Assistant" in page and metadata_document.url in page and metadata_document.redirect_uri in page
    assert "Read: see, change nothing" in page and "Destructive: remove things" in page
    assert "Add a DNS record" in page and "Acme Corp" in page
    # RFC 9207: the authorization response named the portal as issuer (the client checked it too).
    assert consent.redirects[0]["iss"] == portal.site_url and consent.redirects[0]["code"]
    # Only the approved tools are listed.
    assert names == ["dns_record_create", "dns_records_list", "portal_clients", "portal_grants"]
    assert not listed.is_error and json.loads(listed.content[0].text) == [
        {"client": "acme", "name": "Acme Corp", "connected": True}
    ]
    assert not records.is_error, records.content[0].text
    assert records.structured_content["data"]
    # Cloudflare's data, never a Cloudflare credential
    assert json.loads(grants.content[0].text)[0]["permissions"] == sorted(READ_SCOPES)
    for answer in (listed, grants, records):
        assert acme_live.access_token not in answer.content[0].text
        assert acme_live.refresh_token not in answer.content[0].text
    conn = AgentConnection.objects.get()
    assert conn.user == mfa_manager and conn.calls == 3 and conn.last_used_at is not None
    assert list(conn.clients.all()) == [acme]
    # The read was counted in the same record as staff reads, as the agent on behalf of the manager.
    from operations.models import ActionReadCount

    count = ActionReadCount.objects.get(action_id="dns.records.list")
    assert count.actor == mfa_manager and count.actor_via == "agent" and count.count == 1


def test_a_write_the_grant_has_no_scope_for_is_refused_in_plain_words_with_zero_calls_to_cloudflare(
    portal, acme, acme_live, mfa_manager, metadata_document, cf_sandbox
):
    consent = Consent(tools=["dns_record_create"], client_ids=[acme.pk])
    agent = _agent(portal, mfa_manager, consent, metadata_document=metadata_document)
    zone = Zone.objects.filter(account__grants=acme_live).order_by("name").first()
    cf_sandbox.reset_counters()
    writes_before = len(cf_sandbox.writes())

    result = agent.run(
        lambda s: s.call_tool(
            "dns_record_create", {"zone": zone.name, "type": "TXT", "name": "agent-test", "content": "hello"}
        )
    )

    assert result.is_error
    text = result.content[0].text
    assert "has not given the permission" in text and "DNS" in text
    assert api_calls(cf_sandbox) == 0
    assert len(cf_sandbox.writes()) == writes_before
    record = ActionRecord.objects.get(action_id="dns.record.create")
    assert record.outcome == "refused" and record.actor == mfa_manager and record.actor_via == "agent"
    assert record.actor_label == "Ops Assistant"


def test_an_agent_registered_dynamically_is_approved_and_calls_a_tool(portal, acme, acme_live, mfa_manager, cf_sandbox):
    from tests.agents.conftest import free_port

    consent = Consent(tools=["portal_zones"], client_ids=[acme.pk])
    agent = _agent(portal, mfa_manager, consent, redirect_uri=f"http://127.0.0.1:{free_port()}/callback")

    result = agent.run(lambda s: s.call_tool("portal_zones", {}))

    assert "/agents/oauth/register/" in " ".join(agent.requests_seen)
    assert not result.is_error, result.content[0].text
    assert {z["client"] for z in json.loads(result.content[0].text)} == {"acme"}
    assert agent.storage.client_info.client_id and not agent.storage.client_info.client_secret


def test_a_metadata_document_with_a_foreign_http_redirect_is_refused_before_consent(
    portal, acme, mfa_manager, metadata_document, settings
):
    doc = metadata_document.documents["/agent/client.json"]
    doc["redirect_uris"] = ["http://bot.example/callback"]
    browser = staff_browser(portal, mfa_manager)
    response = browser.get(
        f"{portal.site_url}/agents/oauth/authorize/",
        params={
            "response_type": "code",
            "client_id": metadata_document.url,
            "redirect_uri": "http://bot.example/callback",
            "state": "s",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
            "resource": portal.mcp_url,
            "scope": "mcp",
        },
        timeout=10,
        allow_redirects=False,
    )
    assert metadata_document.fetches == ["/agent/client.json"]
    assert response.status_code == 400 and "bot.example" not in response.headers.get("Location", "")
    assert not AgentConnection.objects.exists()
    from oauth2_provider.models import Application

    assert not Application.objects.filter(client_id=metadata_document.url).exists()
