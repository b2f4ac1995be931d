"""Every admin changelist costs the same number of queries for 1 row and for 50 rows,
and no page of the admin ever shows a token or a secret."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from connections.models import Grant
from tests import factories


def _grant_with_everything(client=None, app=None):
    client = client or factories.ClientFactory(account_manager=factories.StaffFactory())
    grant = factories.GrantFactory(client=client, **({"app": app} if app else {}))
    account = factories.CloudflareAccountFactory(client=client)
    factories.ZoneFactory(account=account)
    grant.accounts.add(account)
    member = factories.ClientMemberFactory(client=client)
    factories.GrantEventFactory(grant=grant, actor=member.user)
    factories.AlertFactory(grant=grant)
    factories.AuthorizationRequestFactory(client=client, app=grant.app, user=member.user, grant=grant)
    return grant


def _seed(n: int) -> None:
    app = factories.OAuthAppFactory()
    for _ in range(n):
        _grant_with_everything(app=app)


CHANGELISTS = [
    "clients_client",
    "clients_clientmember",
    "clients_cloudflareaccount",
    "clients_zone",
    "connections_oauthapp",
    "connections_authorizationrequest",
    "connections_grant",
    "connections_grantevent",
    "connections_alert",
]


def _count_queries(admin_client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = admin_client.get(url)
    assert response.status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize("name", CHANGELISTS)
def test_it_renders_each_changelist_with_the_same_query_count_for_1_and_50_rows(admin_client, name):
    url = reverse(f"admin:{name}_changelist")
    _seed(1)
    one = _count_queries(admin_client, url)
    _seed(49)
    fifty = _count_queries(admin_client, url)
    assert one == fifty, f"{name}: {one} queries for 1 row, {fifty} for 50"


def test_it_never_shows_a_token_in_the_grant_list_or_change_form(admin_client):
    grant = _grant_with_everything()
    secrets = [grant.access_token, grant.refresh_token, grant.app.client_secret]
    pages = [
        reverse("admin:connections_grant_changelist"),
        reverse("admin:connections_grant_change", args=[grant.pk]),
        reverse("admin:connections_oauthapp_changelist"),
        reverse("admin:connections_oauthapp_change", args=[grant.app.pk]),
        reverse("admin:connections_authorizationrequest_changelist"),
        reverse("admin:connections_grantevent_changelist"),
        reverse("admin:connections_alert_changelist"),
    ]
    for url in pages:
        body = admin_client.get(url).content.decode()
        for secret in secrets:
            assert secret not in body, url
        assert "cfort_" not in body.replace(grant.refresh_token_masked, "")


def test_it_shows_tokens_only_as_masked_fingerprints(admin_client):
    grant = _grant_with_everything()
    body = admin_client.get(reverse("admin:connections_grant_change", args=[grant.pk])).content.decode()
    assert grant.refresh_token_fp[:8] in body
    assert grant.refresh_token_fp not in body  # never the whole fingerprint either


def test_it_shows_who_authorized_what_and_the_reach_on_the_grant_page(admin_client):
    grant = _grant_with_everything()
    account = grant.accounts.get()
    zone = account.zones.get()
    body = admin_client.get(reverse("admin:connections_grant_change", args=[grant.pk])).content.decode()
    assert grant.cf_user_email in body
    assert account.name in body and zone.name in body
    assert "dns.read" in body
    assert "Event timeline" in body


def test_it_refuses_changelist_lookups_on_secret_columns(admin_client):
    grant = _grant_with_everything()
    url = reverse("admin:connections_grant_changelist")
    for lookup in ("refresh_token_fp__startswith", "access_token__startswith", "refresh_token"):
        response = admin_client.get(url, {lookup: grant.refresh_token_fp[:4]})
        # The admin answers a disallowed lookup with a redirect to ?e=1, never a filtered list.
        assert response.status_code in (302, 400), lookup


def test_it_keeps_the_stored_secret_when_the_oauth_app_form_leaves_it_empty(admin_client):
    app = factories.OAuthAppFactory(secret="original-secret-value")
    url = reverse("admin:connections_oauthapp_change", args=[app.pk])
    data = {
        "name": app.name,
        "client_id": app.client_id,
        "new_client_secret": "",
        "token_endpoint_auth_method": "client_secret_basic",
        "redirect_uri": app.redirect_uri,
        "required_scopes": '["zone.read"]',
        "optional_scopes": "[]",
        "visibility": "public",
        "publisher_domain": "agency.example",
        "iss_policy": "advertised",
        "is_active": "on",
    }
    response = admin_client.post(url, data)
    assert response.status_code == 302
    app.refresh_from_db()
    assert app.client_secret == "original-secret-value"
    assert app.required_scopes == ["zone.read"]


def test_it_rejects_colon_style_scopes_in_the_oauth_app_form(admin_client):
    url = reverse("admin:connections_oauthapp_add")
    response = admin_client.post(
        url,
        {
            "name": "App",
            "client_id": "cid",
            "new_client_secret": "s3cret-value",
            "token_endpoint_auth_method": "client_secret_basic",
            "redirect_uri": "https://portal.example/oauth/cloudflare/callback/",
            "required_scopes": '["zone:read"]',
            "optional_scopes": "[]",
            "visibility": "public",
        },
    )
    assert response.status_code == 200
    assert "dot-style" in response.content.decode()


def test_it_does_not_let_staff_add_or_delete_grants(admin_client):
    grant = _grant_with_everything()
    assert admin_client.get(reverse("admin:connections_grant_add")).status_code == 403
    assert admin_client.get(reverse("admin:connections_grant_delete", args=[grant.pk])).status_code == 403
    assert Grant.objects.filter(pk=grant.pk).exists()


def _page_queries(admin_client, url: str) -> int:
    # A first request fills per-process caches (content types), so both measurements are warm.
    admin_client.get(url)
    return _count_queries(admin_client, url)


def test_the_grant_page_costs_the_same_for_1_and_50_events_accounts_and_zones(admin_client):
    grant = _grant_with_everything()
    url = reverse("admin:connections_grant_change", args=[grant.pk])
    one = _page_queries(admin_client, url)
    for _ in range(49):
        account = factories.CloudflareAccountFactory(client=grant.client)
        factories.ZoneFactory(account=account)
        grant.accounts.add(account)
        factories.GrantEventFactory(grant=grant)
    assert _page_queries(admin_client, url) == one


def test_the_client_page_costs_the_same_for_1_and_50_grants_and_contacts(admin_client):
    grant = _grant_with_everything()
    url = reverse("admin:clients_client_change", args=[grant.client.pk])
    one = _page_queries(admin_client, url)
    for _ in range(49):
        factories.GrantFactory(client=grant.client, app=grant.app)
        factories.ClientMemberFactory(client=grant.client)
    assert _page_queries(admin_client, url) == one


def test_it_filters_grants_by_scope_coverage(admin_client):
    app = factories.OAuthAppFactory()
    complete = factories.GrantFactory(app=app, cf_user_email="complete@x.example")
    partial = factories.GrantFactory(app=app, cf_user_email="partial@x.example", declined_scopes=["dns.write"])
    missing = factories.GrantFactory(
        app=app, cf_user_email="missing@x.example", granted_scopes=["offline_access", "zone.read"]
    )
    url = reverse("admin:connections_grant_changelist")
    for value, expected in (("complete", complete), ("partial", partial), ("missing", missing)):
        body = admin_client.get(url, {"coverage": value}).content.decode()
        shown = {g.cf_user_email for g in (complete, partial, missing) if g.cf_user_email in body}
        assert shown == {expected.cf_user_email}, value


def test_it_lists_zones_and_the_connection_summary_per_client(admin_client):
    _grant_with_everything()
    body = admin_client.get(reverse("admin:clients_client_changelist")).content.decode()
    assert 'class="field-zones_count">1<' in body
    assert 'class="field-connection">Connected<' in body


def test_it_writes_scopes_in_plain_words_on_the_grant_page(admin_client):
    grant = _grant_with_everything()
    body = admin_client.get(reverse("admin:connections_grant_change", args=[grant.pk])).content.decode()
    from connections.scopes import describe

    assert describe("dns.read") in body and "<code>dns.read</code>" in body
