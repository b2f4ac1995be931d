"""Consent is for MFA-verified staff, within their own clients; every call is checked again against
the staff member as they are now; the per-agent rate limit; the Agent connections admin page."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from oauth2_provider.models import Application

from agencyportal import roles
from agents import tools
from agents.models import AgentConnection
from operations.models import ActionRecord
from tests import factories
from tests.operations.conftest import api_calls

AUTHORIZE = "/agents/oauth/authorize/"


def _application(name="Ops Assistant", redirect="http://127.0.0.1:9999/callback"):
    return Application.objects.create(
        name=name,
        client_type=Application.CLIENT_PUBLIC,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=redirect,
    )


def _authorize_query(app, settings, **overrides):
    params = {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": app.redirect_uris,
        "state": "s1",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
        "resource": settings.MCP_URL,
        "scope": "mcp",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def _connection(user, clients, tool_names, app=None):
    app = app or _application()
    conn = AgentConnection.objects.create(
        user=user,
        application=app,
        name=app.name,
        client_id_url=app.client_id,
        redirect_uri=app.redirect_uris,
        tools=list(tool_names),
    )
    conn.clients.set(clients)
    return conn


def test_the_consent_page_needs_a_staff_session_verified_with_mfa(client, settings, manager):
    settings.STAFF_OTP_REQUIRED = True
    app = _application()
    anonymous = client.get(AUTHORIZE, _authorize_query(app, settings))
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("admin:login"))
    client.force_login(manager)  # a password session, no authenticator code
    unverified = client.get(AUTHORIZE, _authorize_query(app, settings))
    assert unverified.status_code == 302 and unverified["Location"].startswith(reverse("admin:login"))
    assert not AgentConnection.objects.exists()


def test_the_consent_page_offers_only_the_staff_members_own_clients_and_refuses_another(
    client, settings, manager, acme
):
    acme.account_manager = manager
    acme.save(update_fields=["account_manager"])
    other = factories.ClientFactory(name="Globex", slug="globex")
    app = _application()
    client.force_login(manager)
    page = client.get(AUTHORIZE, _authorize_query(app, settings))
    assert page.status_code == 200
    body = page.content.decode()
    assert "Acme Corp" in body and "Globex" not in body
    assert "Read: see, change nothing" in body and "Remove DNS" not in body  # staff words, not client words
    form = {**_authorize_query(app, settings), "allow": "on", "tools": ["portal_clients"], "clients": [other.pk]}
    response = client.post(AUTHORIZE, form)
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert not AgentConnection.objects.exists()


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"resource": "https://other.example/mcp"}, "only grants access to its MCP server"),
        ({"resource": None}, "only grants access to its MCP server"),
        ({"code_challenge_method": "plain"}, "PKCE with S256"),
        ({"code_challenge": None, "code_challenge_method": None}, "PKCE with S256"),
        ({"approval_prompt": "auto"}, "approved on this page"),
    ],
)
def test_the_consent_page_refuses_requests_the_portal_does_not_grant(client, settings, manager, overrides, words):
    app = _application()
    client.force_login(manager)
    response = client.get(AUTHORIZE, _authorize_query(app, settings, **overrides))
    assert response.status_code == 400 and words in response.content.decode()


def test_registration_takes_public_clients_with_https_or_loopback_redirects_only(client, db):
    url = "/agents/oauth/register/"
    confidential = {"redirect_uris": ["https://bot.example/cb"], "token_endpoint_auth_method": "client_secret_basic"}
    foreign_http = {"redirect_uris": ["http://bot.example/cb"], "token_endpoint_auth_method": "none"}
    for body in (confidential, foreign_http, {"redirect_uris": []}):
        response = client.post(url, json.dumps(body), content_type="application/json")
        assert response.status_code == 400, body
    assert client.post(url, b"{nope", content_type="application/json").status_code == 400
    assert not Application.objects.exists()
    ok = client.post(
        url,
        json.dumps(
            {"client_name": "Bot", "redirect_uris": ["http://127.0.0.1:7777/cb"], "token_endpoint_auth_method": "none"}
        ),
        content_type="application/json",
    )
    assert ok.status_code == 201 and "client_secret" not in ok.json()
    assert Application.objects.get().client_type == Application.CLIENT_PUBLIC


def test_a_call_is_refused_once_the_client_is_no_longer_the_staff_members_with_zero_calls(
    acme_grant, acme, manager, cf_sandbox, zone
):
    conn = _connection(manager, [acme], ["dns_records_list"])
    first = tools.call_tool(conn.pk, "dns_records_list", {"zone": zone.name})
    assert not first.is_error, first.text
    acme.account_manager = factories.StaffFactory(username="someone-else")
    acme.save(update_fields=["account_manager"])
    cf_sandbox.reset_counters()

    refused = tools.call_tool(conn.pk, "dns_records_list", {"zone": zone.name})

    assert refused.is_error and "Acme Corp is not one of your clients" in refused.text
    assert api_calls(cf_sandbox) == 0
    # and the portal lists no longer show it either
    conn.tools = ["dns_records_list", "portal_clients"]
    conn.save(update_fields=["tools"])
    assert json.loads(tools.call_tool(conn.pk, "portal_clients", {}).text) == []


def test_support_staff_cannot_have_an_agent_write_even_if_they_ticked_the_tool(
    acme_grant, acme, support, cf_sandbox, zone
):
    conn = _connection(support, [acme], ["dns_record_create"])
    cf_sandbox.reset_counters()
    result = tools.call_tool(
        conn.pk, "dns_record_create", {"zone": zone.name, "type": "TXT", "name": "a", "content": "b"}
    )
    assert result.is_error and "Support can only run read actions" in result.text
    assert api_calls(cf_sandbox) == 0
    record = ActionRecord.objects.get()
    assert record.outcome == "refused" and record.actor == support and record.actor_via == "agent"


def test_a_zone_of_a_client_not_approved_is_not_reachable(acme_grant, acme, manager, cf_sandbox, zone):
    other = factories.ClientFactory(name="Globex", slug="globex", account_manager=manager)
    conn = _connection(manager, [other], ["dns_records_list"])
    result = tools.call_tool(conn.pk, "dns_records_list", {"zone": zone.name})
    assert result.is_error and "not one of the zones of the clients this agent may act on" in result.text
    assert api_calls(cf_sandbox) == 0


def test_the_per_agent_rate_limit_refuses_calls_beyond_it(settings, manager, acme):
    settings.AGENT_CALLS_PER_MINUTE = 2
    acme.account_manager = manager
    acme.save(update_fields=["account_manager"])
    conn = _connection(manager, [acme], ["portal_clients"])
    other = _connection(manager, [acme], ["portal_clients"], app=_application(name="Other bot"))
    results = [tools.call_tool(conn.pk, "portal_clients", {}) for _ in range(3)]
    assert [r.is_error for r in results] == [False, False, True], [r.text for r in results]
    assert "2 tool calls a minute" in results[2].text
    assert not tools.call_tool(other.pk, "portal_clients", {}).is_error  # per agent, not global
    conn.refresh_from_db()
    assert conn.calls == 2


def test_the_tool_list_is_the_catalogue_with_schemas_and_hints():
    schema = tools.input_schema("dns_record_delete")
    assert schema["required"][0] == "zone" and "confirm" in schema["properties"]
    assert schema["additionalProperties"] is False
    assert tools.annotations("dns_record_delete") == {"read_only": False, "destructive": True}
    assert tools.annotations("dns_records_list") == {"read_only": True, "destructive": False}
    assert tools.annotations("dns_record_create") == {"read_only": False, "destructive": False}
    assert "confirm" not in tools.input_schema("dns_record_create")["properties"]
    assert tools.input_schema("accounts_list")["required"] == ["client"]


def test_the_agent_connections_page_keeps_its_query_count_as_connections_grow(admin_client, agency_admin, db):
    def add(n):
        for i in range(n):
            user = factories.StaffFactory()
            user.groups.add(Group.objects.get_or_create(name=roles.ACCOUNT_MANAGER)[0])
            clients = [factories.ClientFactory(account_manager=user) for _ in range(2)]
            _connection(user, clients, ["portal_clients", "dns_records_list"], app=_application(name=f"bot {i}"))

    url = reverse("admin:agents_agentconnection_changelist")
    add(2)
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(url).status_code == 200
    add(6)
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(url)
    assert response.status_code == 200 and response.content.decode().count('class="button revoke-agent"') == 8
    assert len(many) == len(few)


def test_an_account_manager_sees_only_their_own_agent_connections(client, manager, acme):
    manager.groups.first().permissions.add(Permission.objects.get(codename="view_agentconnection"))
    mine = _connection(manager, [acme], ["portal_clients"])
    theirs = _connection(factories.StaffFactory(), [acme], ["portal_clients"], app=_application(name="Theirs"))
    client.force_login(manager)
    body = client.get(reverse("admin:agents_agentconnection_changelist")).content.decode()
    assert mine.name in body and "Theirs" not in body
    revoke = client.post(reverse("admin:agents_agentconnection_revoke", args=[theirs.pk]))
    assert revoke.status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_the_deployment_checks_refuse_an_http_mcp_url_and_the_test_only_metadata_settings(settings):
    from agents.checks import agents_checks

    settings.MCP_URL = "https://portal.example/mcp"
    settings.AGENT_METADATA_ALLOW_LOOPBACK = False
    settings.AGENT_METADATA_CA_BUNDLE = None
    assert agents_checks(None) == []
    settings.MCP_URL = "http://portal.example/mcp"
    settings.AGENT_METADATA_ALLOW_LOOPBACK = True
    assert sorted(e.id for e in agents_checks(None)) == ["agents.E001", "agents.E002"]


def test_staff_see_an_agents_action_as_the_agent_on_behalf_of_the_staff_member(admin_client, manager, acme):
    ActionRecord.objects.create(
        actor=manager,
        actor_via="agent",
        actor_label="Ops Assistant",
        client=acme,
        action_id="dns.record.create",
        kind="write",
        outcome="refused",
        reason="The client has not given the permission this needs.",
    )
    for page in (
        reverse("admin:clients_client_change", args=[acme.pk]),
        reverse("admin:operations_actionrecord_changelist"),
    ):
        body = admin_client.get(page).content.decode()
        assert "agent Ops Assistant, on behalf of account-manager" in body, page


def test_denying_sends_the_agent_access_denied_and_stores_nothing(client, settings, manager, acme):
    acme.account_manager = manager
    acme.save(update_fields=["account_manager"])
    app = _application()
    client.force_login(manager)
    response = client.post(AUTHORIZE, {**_authorize_query(app, settings), "tools": ["portal_clients"]})
    assert response.status_code == 302
    assert response["Location"].startswith(app.redirect_uris) and "error=access_denied" in response["Location"]
    assert not AgentConnection.objects.exists()


def test_approving_stores_the_ticked_subset_and_a_second_approval_replaces_the_first(client, settings, manager, acme):
    acme.account_manager = manager
    acme.save(update_fields=["account_manager"])
    factories.ClientFactory(name="Initech", slug="initech", account_manager=manager)
    app = _application()
    client.force_login(manager)
    form = {**_authorize_query(app, settings), "allow": "on", "clients": [acme.pk]}
    first = client.post(AUTHORIZE, {**form, "tools": ["portal_clients", "dns_record_delete"]})
    assert first.status_code == 302 and "code=" in first["Location"]
    assert f"iss={settings.SITE_URL}".replace(":", "%3A").replace("/", "%2F") in first["Location"]
    conn = AgentConnection.objects.get()
    assert conn.tools == ["portal_clients", "dns_record_delete"] and list(conn.clients.all()) == [acme]
    assert conn.user == manager and conn.name == "Ops Assistant" and conn.redirect_uri == app.redirect_uris

    client.post(AUTHORIZE, {**form, "tools": ["portal_zones"]})

    conn.refresh_from_db()
    assert conn.revoked_at is not None and conn.revoke_reason == "replaced"
    assert AgentConnection.objects.active().get().tools == ["portal_zones"]


def test_support_sees_every_agent_connection_and_cannot_revoke_one(client, support, manager, acme):
    support.groups.first().permissions.add(Permission.objects.get(codename="view_agentconnection"))
    conn = _connection(manager, [acme], ["portal_clients"])
    client.force_login(support)
    body = client.get(reverse("admin:agents_agentconnection_changelist")).content.decode()
    assert conn.name in body and "revoke-agent" not in body
    assert client.post(reverse("admin:agents_agentconnection_revoke", args=[conn.pk])).status_code == 403
    conn.refresh_from_db()
    assert conn.revoked_at is None


def test_agent_calls_spend_the_same_cloudflare_budget_as_the_workers(
    settings, acme_grant, acme, manager, cf_sandbox, zone
):
    settings.CLOUDFLARE_USER_BUDGET = 1
    settings.CLOUDFLARE_RATELIMIT_MAX_WAIT = 0
    conn = _connection(manager, [acme], ["dns_records_list"])
    assert not tools.call_tool(conn.pk, "dns_records_list", {"zone": zone.name}).is_error
    calls = api_calls(cf_sandbox)

    over = tools.call_tool(conn.pk, "dns_records_list", {"zone": zone.name})

    assert over.is_error and "budget" in over.text
    assert api_calls(cf_sandbox) == calls
