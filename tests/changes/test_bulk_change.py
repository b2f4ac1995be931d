"""Bulk changes over many zones, three grants, real HTTP to the sandbox, one grant revoked midway."""

from __future__ import annotations

from collections import Counter

import pytest

from changes.models import Change, ChangeItem
from changes.services import (
    ChangeInputError,
    change_confirm,
    change_counts,
    change_create,
    change_item_run,
    change_items_dispatch_stalled,
    change_resume,
)
from connections.models import Grant
from operations.models import ActionRecord
from tests.operations.conftest import api_calls
from tests.sandbox_grants import unique_label

from .conftest import reconnect, zoned_client


def _txt() -> dict:
    # The sandbox keeps its records across tests: each test adds a record of its own.
    return {"type": "TXT", "name": f"_verify-{unique_label()}", "content": "agency-verification=7f3a9c"}


pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def three_clients(cf_sandbox, ops_app):
    return [
        zoned_client(cf_sandbox, slug="north", zones=20, app=ops_app),
        zoned_client(cf_sandbox, slug="east", zones=20, app=ops_app),
        zoned_client(cf_sandbox, slug="south", zones=15, app=ops_app),
    ]


def _all_zones(clients):
    return [z for c in clients for z in c.zones]


def test_it_applies_each_record_once_blocks_a_revoked_grant_and_resumes_after_reconnect(
    cf_sandbox, ops_app, three_clients, agency_admin, eager
):
    north, east, south = three_clients
    inputs = _txt()
    name = inputs["name"]
    since = max([w["id"] for w in cf_sandbox.writes()] or [0])
    change = change_create(
        user=agency_admin, plan_id="dns.record.create", inputs=inputs, zones=_all_zones(three_clients)
    )
    change.refresh_from_db()
    assert change.status == Change.Status.PREVIEWED
    assert change_counts(change.pk) == {"ready": 55}
    # The dry run made read-only calls only.
    assert cf_sandbox.writes(since_id=since) == []

    # East's client revokes the grant once it has made 10 API calls (5 zones: a look and a write each).
    cf_sandbox.revoke_after_calls(10, grants=[east.grant.sandbox_grant_id])
    assert change_confirm(change=change, user=agency_admin) == 55
    change.refresh_from_db()
    assert change.status == Change.Status.FINISHED
    by_client = {
        c.client.pk: Counter(ChangeItem.objects.filter(change=change, client=c.client).values_list("status", flat=True))
        for c in three_clients
    }
    assert by_client[north.client.pk] == {"done": 20}
    assert by_client[south.client.pk] == {"done": 15}
    assert by_client[east.client.pk] == {"done": 5, "blocked": 15}
    blocked = ChangeItem.objects.filter(change=change, status="blocked")
    assert all("revoked" in item.reason for item in blocked)
    # After the first refused call, no other east item called Cloudflare with that token.
    east_writes = cf_sandbox.writes(grant_id=east.grant.sandbox_grant_id)
    assert len(east_writes) == 5

    # The client reconnects; Resume runs only the 15 blocked items, with the new grant.
    cf_sandbox.clear_faults()
    new_grant = reconnect(cf_sandbox, east, app=ops_app)
    assert change_resume(change=change, user=agency_admin) == 15
    change.refresh_from_db()
    assert change.status == Change.Status.FINISHED
    assert change_counts(change.pk) == {"done": 55}
    assert len(cf_sandbox.writes(grant_id=new_grant.sandbox_grant_id)) == 15

    # Ground truth: one record created per zone, never two.
    creates = [w for w in cf_sandbox.writes(kind="dns.create") if w["after"]["name"].startswith(name + ".")]
    per_zone = Counter(w["zone_id"] for w in creates)
    assert len(per_zone) == 55 and set(per_zone.values()) == {1}
    # Each item keeps Cloudflare's record id, and the client's record says what was done.
    item = ChangeItem.objects.filter(change=change, client=east.client, status="done").last()
    assert item.result["record_id"]
    record = ActionRecord.objects.get(change_item_id=item.pk, action_id="dns.record.create", outcome="succeeded")
    assert record.grant_id == new_grant.pk and record.actor_via == "bulk"


def test_it_never_applies_an_item_twice_when_it_runs_again(cf_sandbox, ops_app, three_clients, agency_admin, eager):
    north = three_clients[0]
    change = change_create(user=agency_admin, plan_id="dns.record.create", inputs=_txt(), zones=north.zones[:3])
    change_confirm(change=change, user=agency_admin)
    assert change_counts(change.pk) == {"done": 3}
    # A worker killed after Cloudflare applied the write but before the item was saved: the item is
    # found running with an expired lease and runs again.
    item = ChangeItem.objects.filter(change=change).first()
    ChangeItem.objects.filter(pk=item.pk).update(status="running", lease_until="2000-01-01T00:00:00Z")
    Change.objects.filter(pk=change.pk).update(status="running")
    ActionRecord.objects.filter(change_item_id=item.pk).update(idempotency_key="")  # the record was lost too
    cf_sandbox.reset_counters()
    assert change_items_dispatch_stalled() == 1
    record_id = item.result["record_id"]
    item.refresh_from_db()
    assert item.status == "unchanged"  # it looked first, found its record, wrote nothing
    assert item.result["record_id"] == record_id
    assert len(cf_sandbox.writes(kind="dns.create", zone_id=item.zone.cf_zone_id, record_id=record_id)) == 1
    # A duplicate message for a settled item claims nothing and calls nothing.
    cf_sandbox.reset_counters()
    assert change_item_run(item_id=item.pk) is None
    assert api_calls(cf_sandbox) == 0


def test_it_refuses_in_the_dry_run_what_the_grant_does_not_allow_with_zero_calls(
    cf_sandbox, ops_app, agency_admin, eager
):
    narrow = zoned_client(
        cf_sandbox,
        slug="narrow",
        zones=4,
        app=ops_app,
        scopes=["offline_access", "user-details.read", "account-settings.read", "zone.read", "dns.read"],
    )
    change = change_create(user=agency_admin, plan_id="cache.purge", inputs={"mode": "everything"}, zones=narrow.zones)
    assert change_counts(change.pk) == {"refused": 4}
    assert api_calls(cf_sandbox) == 0
    item = ChangeItem.objects.filter(change=change).first()
    assert "Clear the cache" in item.reason or "cache" in item.reason.lower()
    change.refresh_from_db()
    assert change_confirm(change=change, user=agency_admin) == 0
    assert api_calls(cf_sandbox) == 0


def test_it_purges_every_zone_with_one_call_each(cf_sandbox, ops_app, three_clients, agency_admin, eager):
    zones = _all_zones(three_clients)
    since = max([w["id"] for w in cf_sandbox.writes()] or [0])
    change = change_create(user=agency_admin, plan_id="cache.purge", inputs={"mode": "everything"}, zones=zones)
    assert api_calls(cf_sandbox) == 0  # a purge's dry run is the gate alone
    change_confirm(change=change, user=agency_admin)
    assert change_counts(change.pk) == {"done": 55}
    assert api_calls(cf_sandbox) == 55
    purged = Counter(w["zone_id"] for w in cf_sandbox.writes(kind="purge", since_id=since))
    assert purged == Counter({z.cf_zone_id: 1 for z in zones})


def test_it_changes_only_the_matching_records_content(cf_sandbox, ops_app, three_clients, agency_admin, eager):
    north = three_clients[0]
    zones = north.zones[:4]
    name = f"portal-{unique_label()}"
    # Two zones get a www A record first (staff did it by hand earlier); one already points right.
    from operations.gate import Actor
    from operations.services import action_run

    for zone, ip in ((zones[0], "192.0.2.1"), (zones[1], "198.51.100.7")):
        made = action_run(
            actor=Actor(user=agency_admin),
            action_id="dns.record.create",
            client=north.client,
            zone=zone,
            inputs={"type": "A", "name": name, "content": ip},
        )
        assert made.succeeded
    change = change_create(
        user=agency_admin,
        plan_id="dns.records.set_content",
        inputs={"type": "A", "name": name, "content": "198.51.100.7"},
        zones=zones,
    )
    counts = change_counts(change.pk)
    assert counts == {"ready": 1, "unchanged": 3}
    ready = ChangeItem.objects.get(change=change, status="ready")
    assert ready.zone == zones[0]
    assert ready.preview["changes"][0]["before"]["content"] == "192.0.2.1"
    before = len(cf_sandbox.writes(kind="dns.update"))
    change_confirm(change=change, user=agency_admin)
    assert change_counts(change.pk) == {"done": 1, "unchanged": 3}
    updates = cf_sandbox.writes(kind="dns.update")[before:]
    assert [w["zone_id"] for w in updates] == [zones[0].cf_zone_id]


def test_it_rejects_bad_input_before_writing_anything(cf_sandbox, ops_app, three_clients, agency_admin):
    zones = three_clients[0].zones
    for plan_id, inputs in (
        ("dns.record.create", {"type": "A", "name": "www", "content": "not-an-ip"}),
        ("cache.purge", {"mode": "urls", "values": []}),
        ("no.such.plan", {}),
    ):
        with pytest.raises(ChangeInputError):
            change_create(user=agency_admin, plan_id=plan_id, inputs=inputs, zones=zones)
    with pytest.raises(ChangeInputError):
        change_create(user=agency_admin, plan_id="cache.purge", inputs={"mode": "everything"}, zones=[])
    assert Change.objects.count() == 0 and ChangeItem.objects.count() == 0
    assert api_calls(cf_sandbox) == 0


def test_the_revoked_grant_is_checked_not_marked_revoked_by_the_change(
    cf_sandbox, ops_app, three_clients, agency_admin, eager
):
    east = three_clients[1]
    change = change_create(user=agency_admin, plan_id="cache.purge", inputs={"mode": "everything"}, zones=east.zones)
    cf_sandbox.revoke_grant(east.grant.sandbox_grant_id)
    change_confirm(change=change, user=agency_admin)
    assert change_counts(change.pk) == {"blocked": 20}
    # One refused call, then the rest stopped without calling.
    assert len([k for k in cf_sandbox.calls() if "purge_cache" in k]) <= 1
    assert sum(n for k, n in cf_sandbox.calls().items() if "purge_cache" in k) == 1
    # The health check (made due by the 10000 answer) is what decides the grant is revoked.
    east.grant.refresh_from_db()
    assert east.grant.status == Grant.Status.REVOKED
