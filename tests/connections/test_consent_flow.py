from __future__ import annotations

import pytest

from cloudflare_sandbox import seed
from connections.models import AuthorizationRequest, Grant, GrantEvent
from tests.clients.portal_flow import OPTIONAL, connect_through_sandbox

pytestmark = [pytest.mark.sandbox, pytest.mark.django_db]


def test_it_connects_and_stores_the_grant_with_accounts_zones_and_scopes(cf_sandbox, cf_app, owner_client, acme):
    response = connect_through_sandbox(
        owner_client,
        email=seed.ALICE_EMAIL,
        account_mode="specific",
        accounts=[seed.account_id(seed.ACME_CORP)],
        optional_scopes=["dns.write", "cache.purge", "zone-settings.read"],
    )
    assert response.status_code == 303
    assert response["Location"] == "/portal/"
    assert response["Cache-Control"] == "no-store"
    assert response["Referrer-Policy"] == "no-referrer"

    grant = Grant.objects.get(client=acme)
    assert grant.status == Grant.Status.ACTIVE
    assert grant.cf_user_email == seed.ALICE_EMAIL
    assert grant.declined_scopes == ["analytics.read"]
    assert "dns.write" in grant.granted_scopes and "offline_access" in grant.granted_scopes
    assert [a.name for a in grant.accounts.all()] == [seed.ACME_CORP]
    assert grant.accounts.get().zones.count() == 3
    assert grant.refresh_token.startswith("cfort_") and grant.access_token.startswith("cfoat_")
    assert grant.next_refresh_at is not None and grant.next_check_at is not None
    assert AuthorizationRequest.objects.get().outcome == AuthorizationRequest.Outcome.GRANTED
    kinds = set(GrantEvent.objects.filter(grant=grant).values_list("kind", flat=True))
    assert {"connected", "scope_declined"} <= kinds

    page = owner_client.get("/portal/")
    body = page.content.decode()
    assert "Connected, with some optional permissions declined" in body
    assert "Read and change DNS records in your zones" in body
    assert "See traffic analytics for your zones" in body  # declined, listed as such
    assert seed.ACME_CORP in body and seed.ACME_STAGING not in body
    truth = cf_sandbox.state(client_id=cf_app.client_id)["grants"]
    assert len(truth) == 1 and truth[0]["status"] == "active"
    assert set(OPTIONAL) - set(truth[0]["scopes"]) == {"analytics.read"}


def test_it_replaces_the_grant_of_the_same_cloudflare_user_and_revokes_the_old_one(
    cf_sandbox, cf_app, owner_client, acme, settings, django_capture_on_commit_callbacks
):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    connect_through_sandbox(owner_client, email=seed.ALICE_EMAIL)
    old = Grant.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        connect_through_sandbox(owner_client, email=seed.ALICE_EMAIL)
    new = Grant.objects.exclude(pk=old.pk).get()
    old.refresh_from_db()
    assert new.status == Grant.Status.ACTIVE
    assert old.status == Grant.Status.DISCONNECTED and old.end_reason == Grant.EndReason.REPLACED
    assert old.replaced_by == new
    assert GrantEvent.objects.filter(grant=new, kind=GrantEvent.Kind.RECONNECTED).exists()
    # History kept: the old grant's events are all still there.
    assert {"connected", "disconnect_requested", "disconnected"} <= set(
        GrantEvent.objects.filter(grant=old).values_list("kind", flat=True)
    )
    truth = {g["status"] for g in cf_sandbox.state(client_id=cf_app.client_id)["grants"]}
    assert truth == {"active", "revoked"}
    page = owner_client.get("/portal/").content.decode()
    assert "Earlier connections" in page


def test_it_keeps_separate_grants_for_different_cloudflare_users(cf_sandbox, cf_app, owner_client):
    connect_through_sandbox(owner_client, email=seed.ALICE_EMAIL)
    connect_through_sandbox(owner_client, email=seed.BOB_EMAIL)
    assert Grant.objects.filter(status=Grant.Status.ACTIVE).count() == 2
    bob = Grant.objects.get(cf_user_email=seed.BOB_EMAIL)
    # Bob reaches Bigshop (125 zones, three pages of 50) and Acme Corp.
    assert sum(a.zones.count() for a in bob.accounts.all()) == seed.BIGSHOP_ZONE_COUNT + 3


def test_it_grants_the_missing_permissions_with_a_new_consent_that_replaces_the_partial_grant(
    cf_sandbox, cf_app, owner_client, settings, django_capture_on_commit_callbacks
):
    from urllib.parse import parse_qsl, urlsplit

    from tests.clients.portal_flow import authorize_at_sandbox, callback_path, start_consent

    settings.CELERY_TASK_ALWAYS_EAGER = True
    connect_through_sandbox(owner_client, email=seed.ALICE_EMAIL, optional_scopes=["dns.write"])
    partial = Grant.objects.get()
    assert partial.declined_scopes == ["cache.purge", "zone-settings.read", "analytics.read"]
    page = owner_client.get("/portal/").content.decode()
    assert f"/oauth/grants/{partial.code}/add-permissions/" in page

    pre = owner_client.get(f"/oauth/grants/{partial.code}/add-permissions/").content.decode()
    assert "Clear Cloudflare&#x27;s cache for your sites" in pre or "Clear Cloudflare's cache" in pre
    url = start_consent(owner_client, f"/oauth/grants/{partial.code}/add-permissions/")
    scope = dict(parse_qsl(urlsplit(url).query))["scope"]
    # Cloudflare's OAuth server gives each consent its own token: the full list is asked again.
    assert scope.split(" ") == cf_app.all_scopes
    with django_capture_on_commit_callbacks(execute=True):
        owner_client.get(callback_path(authorize_at_sandbox(url, email=seed.ALICE_EMAIL)))
    new = Grant.objects.exclude(pk=partial.pk).get()
    partial.refresh_from_db()
    assert new.status == Grant.Status.ACTIVE and new.declined_scopes == []
    assert GrantEvent.objects.filter(grant=new, kind=GrantEvent.Kind.SCOPES_ADDED).exists()
    assert partial.status == Grant.Status.DISCONNECTED and partial.replaced_by == new
    assert AuthorizationRequest.objects.filter(purpose="add_scopes").get().outcome == "granted"


def test_it_asks_only_for_the_missing_permissions_when_cloudflare_merges_consents(cf_app, owner_client, settings, acme):
    from urllib.parse import parse_qsl, urlsplit

    from tests import factories
    from tests.clients.portal_flow import start_consent

    settings.CLOUDFLARE_INCREMENTAL_CONSENT = True
    grant = factories.GrantFactory(
        client=acme,
        app=cf_app,
        granted_scopes=["offline_access", *cf_app.required_scopes, "dns.write"],
        declined_scopes=["cache.purge", "zone-settings.read", "analytics.read"],
    )
    url = start_consent(owner_client, f"/oauth/grants/{grant.code}/add-permissions/")
    scope = dict(parse_qsl(urlsplit(url).query))["scope"]
    assert scope.split(" ") == ["offline_access", "cache.purge", "zone-settings.read", "analytics.read"]
