"""A real grant at the Cloudflare sandbox with its accounts and zones stored in the portal."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from agencyportal import roles
from clients.models import CloudflareAccount, Zone
from connections import cloudflare
from operations.gate import Actor
from tests import factories
from tests.sandbox_grants import REQUIRED, mint_grants, register_app

OPTIONAL = ["dns.write", "cache.purge", "zone-settings.read"]
ALL_SCOPES = ["offline_access", *REQUIRED, *OPTIONAL]


def sandbox_grant(sandbox, *, client, scopes=None, user_email="alice@example.com", app=None):
    """One grant minted at the sandbox, with the accounts and zones it reaches stored in the portal."""
    app = app or register_app(sandbox, name=f"Ops test app {client.slug}", optional=tuple(OPTIONAL))
    (grant,) = mint_grants(sandbox, app=app, client=client, count=1, user_email=user_email, scopes=scopes or ALL_SCOPES)
    for item in cloudflare.list_accounts(access_token=grant.access_token):
        account, _ = CloudflareAccount.objects.get_or_create(
            client=client, cf_account_id=item["id"], defaults={"name": item["name"]}
        )
        grant.accounts.add(account)
        for z in cloudflare.list_zones(access_token=grant.access_token, account_id=item["id"]):
            Zone.objects.get_or_create(account=account, cf_zone_id=z["id"], defaults={"name": z["name"]})
    sandbox.reset_counters()
    return grant


@pytest.fixture
def manager(db):
    user = factories.StaffFactory(username="account-manager")
    user.groups.add(Group.objects.get_or_create(name=roles.ACCOUNT_MANAGER)[0])
    return user


@pytest.fixture
def support(db):
    user = factories.StaffFactory(username="support")
    user.groups.add(Group.objects.get_or_create(name=roles.SUPPORT)[0])
    return user


@pytest.fixture
def acme_grant(cf_sandbox, acme, manager):
    acme.account_manager = manager
    acme.save(update_fields=["account_manager"])
    return sandbox_grant(cf_sandbox, client=acme)


@pytest.fixture
def zone(acme_grant):
    return Zone.objects.filter(account__grants=acme_grant).order_by("name").first()


@pytest.fixture
def staff_actor(agency_admin):
    return Actor(user=agency_admin)


def api_calls(sandbox) -> int:
    """API v4 calls the sandbox served since the last reset (OAuth endpoints excluded)."""
    return sum(n for key, n in sandbox.calls().items() if "/client/v4" in key)
