"""A script using the official SDK through the proxy with a service key: allowed actions work
(with the grant, or the token before cutover), others are refused with zero upstream calls."""

from __future__ import annotations

from datetime import timedelta

import cloudflare
import pytest
from django.utils import timezone

from apitokens.keys import service_key_create, service_key_revoke
from apitokens.models import ServiceKey
from clients.models import Zone
from operations.models import ActionRecord
from tests import factories
from tests.operations.conftest import api_calls, sandbox_grant

from .conftest import ACME_COM, sandbox_token

pytestmark = pytest.mark.django_db(transaction=True)
ALLOWED = ["dns.records.list", "dns.record.create", "dns.record.delete"]


@pytest.fixture
def sdk(live_server):
    """The official SDK pointed at the proxy, closed after the test: a kept-alive connection would
    keep a live-server thread, and its database connection, past the end of the run."""
    made: list[cloudflare.Cloudflare] = []

    def make(raw: str) -> cloudflare.Cloudflare:
        api = cloudflare.Cloudflare(
            api_token=raw, base_url=f"{live_server.url}/proxy/cloudflare/client/v4", max_retries=0
        )
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()


def _key(*clients, actions=ALLOWED, days=30):
    return service_key_create(
        name="deploy-script",
        clients=list(clients),
        actions=actions,
        expires_at=timezone.now() + timedelta(days=days),
        created_by=None,
    )


def test_the_sdk_runs_allowed_actions_through_the_grant_and_the_record_names_the_key(cf_sandbox, sdk, acme):
    grant = sandbox_grant(cf_sandbox, client=acme)
    zone = Zone.objects.filter(account__grants=grant, name="acme.com").get()
    key, raw = _key(acme)
    assert ServiceKey.objects.get().key_hash != raw and raw not in str(ServiceKey.objects.values().get())
    api = sdk(raw)

    created = api.dns.records.create(zone_id=zone.cf_zone_id, type="TXT", name="_proxy", content="from a script", ttl=1)
    assert created.name == "_proxy.acme.com" and created.id
    names = [r.name for r in api.dns.records.list(zone_id=zone.cf_zone_id, per_page=100)]
    assert "_proxy.acme.com" in names
    api.dns.records.delete(created.id, zone_id=zone.cf_zone_id)

    records = ActionRecord.objects.order_by("created_at")
    assert [r.action_id for r in records] == ["dns.record.create", "dns.record.delete"]
    assert {(r.actor_via, r.actor_label, r.credential, r.grant_id) for r in records} == {
        ("service_key", "deploy-script", "grant", grant.pk)
    }
    assert ServiceKey.objects.get().last_used_at is not None
    from tests.test_secrets_at_rest import _every_text_value

    assert raw not in "\n".join(_every_text_value())


def test_actions_outside_the_key_or_the_catalogue_are_refused_with_zero_upstream_calls(cf_sandbox, sdk, acme):
    grant = sandbox_grant(cf_sandbox, client=acme)
    zone = Zone.objects.filter(account__grants=grant, name="acme.com").get()
    other = factories.ClientFactory(slug="globex")
    other_zone = factories.ZoneFactory(account=factories.CloudflareAccountFactory(client=other))
    key, raw = _key(acme)
    api = sdk(raw)
    cf_sandbox.reset_counters()

    with pytest.raises(cloudflare.PermissionDeniedError, match="not allowed to run cache.purge"):
        api.cache.purge(zone_id=zone.cf_zone_id, purge_everything=True)
    with pytest.raises(cloudflare.NotFoundError, match="No catalogue action for GET /zones/"):
        api.zones.get(zone_id=zone.cf_zone_id)
    with pytest.raises(cloudflare.NotFoundError, match="passes nothing else"):
        api.firewall.access_rules.list(zone_id=zone.cf_zone_id)
    with pytest.raises(cloudflare.PermissionDeniedError, match="may not act on that zone"):
        api.dns.records.list(zone_id=other_zone.cf_zone_id)
    with pytest.raises(cloudflare.AuthenticationError):
        sdk(raw + "x").dns.records.list(zone_id=zone.cf_zone_id)
    service_key_revoke(key=key)
    with pytest.raises(cloudflare.AuthenticationError):
        api.dns.records.list(zone_id=zone.cf_zone_id)
    assert api_calls(cf_sandbox) == 0
    refusal = ActionRecord.objects.get(action_id="cache.purge")
    assert refusal.outcome == "refused" and refusal.actor_via == "service_key"


def test_before_cutover_the_proxy_acts_with_the_clients_api_token(cf_sandbox, sdk, acme):
    token = sandbox_token(
        cf_sandbox, acme, permissions=["Zone Read", "DNS Read", "DNS Write"], zones=[ACME_COM], declared=["DNS Write"]
    )
    key, raw = _key(acme)
    api = sdk(raw)
    created = api.dns.records.create(zone_id=ACME_COM, type="TXT", name="_pre", content="token", ttl=1)
    api.dns.records.delete(created.id, zone_id=ACME_COM)
    records = ActionRecord.objects.all()
    assert {(r.credential, r.api_token_id, r.actor_via) for r in records} == {("api_token", token.pk, "service_key")}
    assert len(cf_sandbox.writes(api_token_id=token.issued["id"])) == 2
