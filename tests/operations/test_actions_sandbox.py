"""Each catalogue action against the sandbox, through the SDK, over real HTTP."""

from __future__ import annotations

import pytest

from operations.models import ActionReadCount, ActionRecord
from operations.services import action_preview, action_run

from .conftest import api_calls

pytestmark = pytest.mark.django_db


def run(actor, client, action_id, inputs=None, **target):
    return action_run(actor=actor, action_id=action_id, client=client, inputs=inputs or {}, **target)


def test_it_reads_user_accounts_zones_records_and_settings(cf_sandbox, staff_actor, acme, acme_grant, zone):
    user = run(staff_actor, acme, "user.read")
    assert user.outcome == "succeeded", user.reason
    assert user.data["email"] == "alice@example.com"
    accounts = run(staff_actor, acme, "accounts.list")
    assert accounts.outcome == "succeeded" and accounts.data["accounts"]
    zones = run(staff_actor, acme, "zones.list", account=zone.account)
    assert zone.name in [z["name"] for z in zones.data["zones"]]
    records = run(staff_actor, acme, "dns.records.list", zone=zone)
    assert records.outcome == "succeeded" and isinstance(records.data["records"], list)
    # Reads are counted per day, not stored one row each.
    assert ActionRecord.objects.count() == 0
    assert sum(ActionReadCount.objects.values_list("count", flat=True)) == 4
    assert records.pk is None


def test_it_reads_zone_settings(cf_sandbox, staff_actor, acme, acme_grant, zone):
    settings_read = run(staff_actor, acme, "zone.settings.read", zone=zone)
    if settings_read.outcome == "failed" and 7003 in settings_read.error_codes or 7000 in settings_read.error_codes:
        pytest.skip("this sandbox build does not serve zone settings yet")
    assert settings_read.outcome == "succeeded", settings_read.reason
    assert settings_read.data["settings"]


def test_it_creates_a_record_once_even_when_run_twice(cf_sandbox, staff_actor, acme, acme_grant, zone):
    inputs = {"type": "TXT", "name": "_verify", "content": "token-123"}
    first = run(staff_actor, acme, "dns.record.create", inputs, zone=zone)
    assert first.outcome == "succeeded", first.reason
    assert first.result["existed"] is False and first.result["record_id"]
    second = run(staff_actor, acme, "dns.record.create", inputs, zone=zone)
    assert second.outcome == "succeeded"
    assert second.result == {**second.result, "existed": True, "record_id": first.result["record_id"]}
    listed = run(staff_actor, acme, "dns.records.list", {"type": "TXT"}, zone=zone).data["records"]
    assert [r["content"] for r in listed if r["name"] == f"_verify.{zone.name}"] == ["token-123"]
    assert first.grant_id == acme_grant.pk and first.cf_user_id == acme_grant.cf_user_id
    assert "Added the DNS TXT record _verify." in first.client_sentence
    # The client's page does not read as two additions: the second run added nothing.
    assert second.client_sentence.startswith("The DNS TXT record _verify.")
    assert second.client_sentence.endswith("was already there: nothing added")


def test_it_updates_only_what_differs_and_keeps_before_and_after(cf_sandbox, staff_actor, acme, acme_grant, zone):
    created = run(
        staff_actor, acme, "dns.record.create", {"type": "A", "name": "app", "content": "203.0.113.1"}, zone=zone
    )
    record_id = created.result["record_id"]
    preview = action_preview(
        actor=staff_actor,
        action_id="dns.record.update",
        client=acme,
        zone=zone,
        inputs={"record_id": record_id, "content": "203.0.113.2"},
    )
    assert preview.outcome == "ready"
    assert (preview.change.before["content"], preview.change.after["content"]) == ("203.0.113.1", "203.0.113.2")
    updated = run(staff_actor, acme, "dns.record.update", {"record_id": record_id, "content": "203.0.113.2"}, zone=zone)
    assert updated.outcome == "succeeded", updated.reason
    assert updated.result["before"]["content"] == "203.0.113.1"
    assert updated.result["after"]["content"] == "203.0.113.2"
    assert updated.result["changed"] == ["content"]
    cf_sandbox.reset_counters()
    again = run(staff_actor, acme, "dns.record.update", {"record_id": record_id, "content": "203.0.113.2"}, zone=zone)
    assert again.result["unchanged"] is True
    assert api_calls(cf_sandbox) == 1  # the read; no write


def test_it_deletes_a_record_and_a_second_delete_finds_it_gone(cf_sandbox, staff_actor, acme, acme_grant, zone):
    created = run(staff_actor, acme, "dns.record.create", {"type": "TXT", "name": "old", "content": "x"}, zone=zone)
    record_id = created.result["record_id"]
    deleted = run(staff_actor, acme, "dns.record.delete", {"record_id": record_id}, zone=zone)
    assert deleted.outcome == "succeeded", deleted.reason
    assert deleted.result["already_gone"] is False and deleted.result["before"]["content"] == "x"
    again = run(staff_actor, acme, "dns.record.delete", {"record_id": record_id}, zone=zone)
    assert again.outcome == "succeeded" and again.result["already_gone"] is True


@pytest.mark.parametrize(
    "inputs",
    [
        {"mode": "everything"},
        {"mode": "urls", "values": ["https://www.example.com/a.css"]},
        {"mode": "hostnames", "values": ["www.example.com"]},
        {"mode": "tags", "values": ["blog"]},
        {"mode": "prefixes", "values": ["www.example.com/blog"]},
    ],
)
def test_it_purges_the_cache(cf_sandbox, staff_actor, acme, acme_grant, zone, inputs):
    purged = run(staff_actor, acme, "cache.purge", inputs, zone=zone)
    assert purged.outcome == "succeeded", purged.reason
    assert api_calls(cf_sandbox) == 1
    assert zone.name in purged.client_sentence


def test_it_records_cloudflare_refusing_a_write_as_failed_with_its_codes(
    cf_sandbox, staff_actor, acme, acme_grant, zone
):
    run(staff_actor, acme, "dns.record.create", {"type": "A", "name": "dup", "content": "203.0.113.5"}, zone=zone)
    # A CNAME on a name that has an A record: Cloudflare refuses (81053).
    refused = run(
        staff_actor, acme, "dns.record.create", {"type": "CNAME", "name": "dup", "content": "example.net"}, zone=zone
    )
    assert refused.outcome == "failed"
    assert 81053 in refused.error_codes and refused.error_messages
