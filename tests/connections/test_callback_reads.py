"""The callback reads the user, accounts and zones concurrently: every zone is stored whatever
the number of pages, and a grant of 128 zones costs about two round trips, not seven."""

from __future__ import annotations

import time

import pytest

from cloudflare_sandbox import seed
from connections.models import Grant
from tests.clients.portal_flow import authorize_at_sandbox, callback_path, start_consent

pytestmark = [pytest.mark.sandbox, pytest.mark.django_db]


def bob_zone_names() -> dict[str, set[str]]:
    bob = Grant.objects.get(cf_user_email=seed.BOB_EMAIL)
    return {a.name: set(a.zones.values_list("name", flat=True)) for a in bob.accounts.all()}


@pytest.mark.parametrize("pages_at_once", [1, 2, 3, 5])
def test_it_stores_every_zone_of_every_account_however_many_pages_it_reads_at_once(
    cf_sandbox, cf_app, owner_client, settings, pages_at_once
):
    # Bob reaches Bigshop (125 zones: three pages of 50) and Acme Corp (3 zones): 128 in all.
    settings.CLOUDFLARE_CALLBACK_ZONE_PAGES = pages_at_once
    location = authorize_at_sandbox(start_consent(owner_client), email=seed.BOB_EMAIL)
    response = owner_client.get(callback_path(location))
    assert response.status_code == 303
    # Each zone under the account Cloudflare says it belongs to, none missing, none duplicated.
    assert bob_zone_names() == {
        seed.BIGSHOP: set(seed.bigshop_zone_names()),
        seed.ACME_CORP: {name for name, _, _ in seed.SEED_ZONES[seed.ACME_CORP]},
    }
    assert Grant.objects.get(cf_user_email=seed.BOB_EMAIL).accounts.get(name=seed.BIGSHOP).zones.count() == 125


def test_it_answers_the_callback_in_about_two_round_trips_for_a_grant_of_128_zones(cf_sandbox, cf_app, owner_client):
    # One after another, the token call, /user, /accounts and four pages of /zones were seven round
    # trips (2.1 s at 300 ms); now the token call and one concurrent round.
    latency = 0.3
    location = authorize_at_sandbox(start_consent(owner_client), email=seed.BOB_EMAIL)
    cf_sandbox.set_faults(latency_ms=int(latency * 1000), latency_endpoints=["token", "api"])
    started = time.monotonic()
    response = owner_client.get(callback_path(location))
    elapsed = time.monotonic() - started
    assert response.status_code == 303
    assert Grant.objects.get(cf_user_email=seed.BOB_EMAIL).status == Grant.Status.ACTIVE
    assert elapsed < 3 * latency, f"callback took {elapsed:.2f} s at {latency:.1f} s of latency"
