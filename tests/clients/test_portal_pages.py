"""Portal pages: what a contact sees, scoped to their own client, at a fixed query count."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from connections.models import Grant
from tests import factories

pytestmark = [pytest.mark.django_db]


def make_grants(client, app, *, grants: int, accounts: int, zones: int) -> list[Grant]:
    made = []
    for _ in range(grants):
        grant = factories.GrantFactory(client=client, app=app, declined_scopes=["cache.purge"])
        for _ in range(accounts):
            account = factories.CloudflareAccountFactory(client=client)
            factories.ZoneFactory.create_batch(zones, account=account)
            grant.accounts.add(account)
        made.append(grant)
    return made


def test_the_empty_state_explains_what_connecting_means(owner_client, oauth_app):
    body = owner_client.get("/portal/").content.decode()
    assert "You have not connected Cloudflare yet" in body
    assert "without you sharing a password or an API key" in body
    assert 'href="/oauth/connect/"' in body


def test_a_grant_shows_who_what_where_and_when(owner_client, oauth_app, acme, client_owner):
    (grant,) = make_grants(acme, oauth_app, grants=1, accounts=1, zones=2)
    Grant.objects.filter(pk=grant.pk).update(
        authorized_by=client_owner, granted_scopes=["offline_access", *oauth_app.required_scopes, "dns.write"]
    )
    account = grant.accounts.get()
    body = owner_client.get("/portal/").content.decode()
    assert grant.cf_user_email in body
    assert f"by {client_owner.username}" in body
    assert account.name in body
    for zone in account.zones.all():
        assert zone.name in body
    assert "Read and change DNS records in your zones" in body
    assert "Permissions you declined" in body and "Clear Cloudflare&#x27;s cache" in body
    assert "Last refreshed" in body and "Not checked yet" in body
    assert f"/oauth/grants/{grant.code}/disconnect/" in body
    assert f"/oauth/grants/{grant.code}/add-permissions/" in body
    # Never a token, a fingerprint or a masked token on a client page.
    assert grant.access_token not in body and grant.refresh_token not in body
    assert grant.access_token_fp[:8] not in body and "cfoat_" not in body and "cfort_" not in body


def test_the_needs_note_shows_only_when_a_connection_lacks_a_permission_some_action_needs(
    owner_client, oauth_app, acme
):
    from operations.catalogue import scopes_used

    note = "lists a permission you did not give"
    (grant,) = make_grants(acme, oauth_app, grants=1, accounts=1, zones=1)
    Grant.objects.filter(pk=grant.pk).update(granted_scopes=sorted(scopes_used()))
    body = owner_client.get("/portal/").content.decode()
    assert note not in body and "needs " not in body
    Grant.objects.filter(pk=grant.pk).update(granted_scopes=sorted(scopes_used() - {"cache.purge"}))
    body = owner_client.get("/portal/").content.decode()
    assert note in body and 'class="refused" data-action="cache.purge"' in body


def test_a_contact_never_sees_another_clients_grants(owner_client, oauth_app, other_client_owner):
    other = other_client_owner.client_membership.client
    (foreign,) = make_grants(other, oauth_app, grants=1, accounts=1, zones=1)
    body = owner_client.get("/portal/").content.decode()
    assert foreign.cf_user_email not in body
    assert str(foreign.code) not in body


def test_a_viewer_sees_grants_without_buttons(client, acme, oauth_app):
    viewer = factories.ClientMemberFactory(client=acme, role="viewer").user
    (grant,) = make_grants(acme, oauth_app, grants=1, accounts=1, zones=1)
    client.force_login(viewer)
    body = client.get("/portal/").content.decode()
    assert grant.cf_user_email in body
    assert "/disconnect/" not in body and "/add-permissions/" not in body


def test_ended_grants_move_to_the_history(owner_client, oauth_app, acme):
    factories.GrantFactory(client=acme, app=oauth_app, status="revoked", ended_at="2026-01-01T00:00:00Z")
    body = owner_client.get("/portal/").content.decode()
    assert "Earlier connections" in body and "Revoked in Cloudflare" in body
    # Not "never connected": the page says the connection ended (tests/clients/test_portal_ended_grants.py).
    assert "Your Cloudflare connection has ended" in body


def _count(owner_client) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert owner_client.get("/portal/").status_code == 200
    return len(ctx.captured_queries)


def test_the_home_page_query_count_does_not_grow_with_grants_accounts_and_zones(
    owner_client, oauth_app, acme, django_assert_num_queries
):
    make_grants(acme, oauth_app, grants=1, accounts=1, zones=1)
    # session, user, membership (+client), default app, grants (+app, +authorized_by), accounts, zones,
    # what the agency changed (operations), a migration off an API token in progress (apitokens)
    with django_assert_num_queries(9):
        owner_client.get("/portal/")
    make_grants(acme, oauth_app, grants=6, accounts=3, zones=20)
    with django_assert_num_queries(9):
        owner_client.get("/portal/")


def test_the_disconnect_page_query_count_does_not_grow_with_accounts(owner_client, oauth_app, acme):
    (small,) = make_grants(acme, oauth_app, grants=1, accounts=1, zones=1)
    (big,) = make_grants(acme, oauth_app, grants=1, accounts=8, zones=10)
    counts = []
    for grant in (small, big):
        with CaptureQueriesContext(connection) as ctx:
            assert owner_client.get(f"/oauth/grants/{grant.code}/disconnect/").status_code == 200
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1]


def test_the_help_page_is_private_when_signed_in(owner_client, oauth_app):
    response = owner_client.get("/portal/help/")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store" and response["Referrer-Policy"] == "same-origin"


def test_the_help_page_explains_revoking_from_cloudflare(owner_client, oauth_app):
    body = owner_client.get("/portal/help/").content.decode()
    assert "Connected Applications" in body and "Access Management" in body and "Profile" in body
    assert "What the agency cannot do" in body
    assert oauth_app.name in body
