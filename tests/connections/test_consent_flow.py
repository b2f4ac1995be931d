from __future__ import annotations

import pytest
from cloudflare_sandbox import seed

from connections.models import AuthorizationRequest, Grant, GrantEvent
from tests.clients.portal_flow import OPTIONAL, connect_through_sandbox, register_sandbox_app

pytestmark = [pytest.mark.sandbox, pytest.mark.django_db]


@pytest.fixture
def cf_app(cf_sandbox):
    return register_sandbox_app(cf_sandbox)


@pytest.fixture
def owner_client(client, client_owner):
    client.force_login(client_owner)
    return client


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
