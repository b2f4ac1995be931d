"""The gate: every refusal path, with zero calls to Cloudflare (the sandbox's counters)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from clients.models import Zone
from connections.models import Grant
from operations.gate import Actor
from operations.models import ActionRecord
from operations.services import action_preview, action_run
from tests import factories

from .conftest import api_calls, sandbox_grant

pytestmark = pytest.mark.django_db

CREATE = {"type": "TXT", "name": "_x", "content": "y"}


def run(actor, client, action_id, inputs, **target):
    return action_run(actor=actor, action_id=action_id, client=client, inputs=inputs, **target)


def test_it_refuses_when_the_grant_is_revoked(cf_sandbox, staff_actor, acme, acme_grant, zone):
    Grant.objects.filter(pk=acme_grant.pk).update(
        status="revoked", ended_at=timezone.now(), access_token_fp="", refresh_token_fp=""
    )
    record = run(staff_actor, acme, "dns.record.create", CREATE, zone=zone)
    assert record.outcome == "refused" and record.result["code"] == "grant_not_live"
    assert "no working Cloudflare connection" in record.reason
    assert api_calls(cf_sandbox) == 0


def test_it_uses_a_refresh_failing_grant_only_while_its_token_is_valid(cf_sandbox, staff_actor, acme, acme_grant, zone):
    Grant.objects.filter(pk=acme_grant.pk).update(status="refresh_failing")
    assert run(staff_actor, acme, "dns.records.list", {}, zone=zone).outcome == "succeeded"
    Grant.objects.filter(pk=acme_grant.pk).update(access_expires_at=timezone.now())
    cf_sandbox.reset_counters()
    assert run(staff_actor, acme, "dns.records.list", {}, zone=zone).outcome == "refused"
    assert api_calls(cf_sandbox) == 0


def test_it_refuses_a_missing_scope_and_names_it_for_a_reconsent_link(cf_sandbox, staff_actor, acme, acme_grant, zone):
    Grant.objects.filter(pk=acme_grant.pk).update(
        granted_scopes=[s for s in acme_grant.granted_scopes if s != "cache.purge"]
    )
    record = run(staff_actor, acme, "cache.purge", {"mode": "everything"}, zone=zone)
    assert record.outcome == "refused" and record.result == {"code": "scope_missing", "missing_scopes": ["cache.purge"]}
    assert "Clear Cloudflare's cache" in record.reason and "re-consent link" in record.reason
    assert record.grant_id == acme_grant.pk
    preview = action_preview(
        actor=staff_actor, action_id="cache.purge", client=acme, zone=zone, inputs={"mode": "everything"}
    )
    assert preview.outcome == "refused" and preview.missing_scopes == {"cache.purge"}
    assert api_calls(cf_sandbox) == 0


def test_it_refuses_a_zone_outside_the_grants_reach(cf_sandbox, staff_actor, acme, acme_grant, zone):
    other = factories.CloudflareAccountFactory(client=acme, name="Not picked")
    outside = factories.ZoneFactory(account=other, name="outside.example")
    record = run(staff_actor, acme, "dns.record.create", CREATE, zone=outside)
    assert record.outcome == "refused" and record.result["code"] == "out_of_reach"
    Zone.objects.filter(pk=zone.pk).update(removed_at=timezone.now())
    zone.refresh_from_db()
    assert run(staff_actor, acme, "dns.record.create", CREATE, zone=zone).result["code"] == "out_of_reach"
    assert api_calls(cf_sandbox) == 0


def test_it_refuses_another_clients_zone(cf_sandbox, staff_actor, acme, acme_grant, zone, other_client_owner):
    globex = other_client_owner.client_membership.client
    record = run(staff_actor, globex, "dns.record.create", CREATE, zone=zone)
    assert record.outcome == "refused" and record.result["code"] == "out_of_reach"
    assert api_calls(cf_sandbox) == 0


def test_an_account_manager_acts_on_own_clients_only(cf_sandbox, acme, acme_grant, zone, manager):
    assert run(Actor(user=manager), acme, "dns.record.create", CREATE, zone=zone).outcome == "succeeded"
    acme.account_manager = factories.StaffFactory()
    acme.save()
    cf_sandbox.reset_counters()
    record = run(Actor(user=manager), acme, "dns.records.list", {}, zone=zone)
    assert record.outcome == "refused" and record.result["code"] == "role"
    assert "not one of your clients" in record.reason
    assert api_calls(cf_sandbox) == 0


def test_support_runs_reads_but_no_writes(cf_sandbox, acme, acme_grant, zone, support):
    assert run(Actor(user=support), acme, "dns.records.list", {}, zone=zone).outcome == "succeeded"
    cf_sandbox.reset_counters()
    for action_id, inputs in [("dns.record.create", CREATE), ("cache.purge", {"mode": "everything"})]:
        record = run(Actor(user=support), acme, action_id, inputs, zone=zone)
        assert record.outcome == "refused" and record.result["code"] == "role"
        assert "Support can only run read actions" in record.reason
    assert api_calls(cf_sandbox) == 0


def test_staff_without_a_role_and_non_staff_are_refused(cf_sandbox, acme, acme_grant, zone, client_owner):
    for user in (factories.StaffFactory(username="no-role"), client_owner):
        record = run(Actor(user=user), acme, "dns.records.list", {}, zone=zone)
        assert record.outcome == "refused" and record.result["code"] == "role"
    assert api_calls(cf_sandbox) == 0


@pytest.mark.parametrize(
    ("action_id", "inputs", "expected"),
    [
        ("dns.record.create", {"type": "A", "name": "www", "content": "not-an-ip"}, "IPv4"),
        ("dns.record.create", {"type": "MX", "name": "@", "content": "mail.example.com"}, "priority"),
        ("dns.record.create", {"type": "TXT", "name": "a b", "content": "x"}, "host name"),
        ("dns.record.create", {"type": "TXT", "name": "a", "content": "x", "ttl": 5}, "TTL"),
        ("dns.record.create", {"type": "TXT", "name": "a", "content": "x", "proxied": True}, "cannot be proxied"),
        ("dns.record.create", {"type": "TXT", "name": "a", "content": "x", "colour": "red"}, "colour"),
        ("cache.purge", {"mode": "urls", "values": ["not a url"]}, "full URL"),
        ("cache.purge", {"mode": "tags"}, "at least one"),
        ("cache.purge", {"mode": "urls", "values": [f"https://a.example/{n}" for n in range(31)]}, "30"),
        ("dns.record.delete", {"record_id": "../../zones"}, "record id"),
        ("no.such.action", {}, "no action"),
    ],
)
def test_bad_input_gets_a_clear_error_and_no_call(
    cf_sandbox, staff_actor, acme, acme_grant, zone, action_id, inputs, expected
):
    record = run(staff_actor, acme, action_id, inputs, zone=zone)
    assert record.outcome == "invalid"
    assert expected in record.reason
    assert ActionRecord.objects.filter(pk=record.pk, outcome="invalid").exists()
    assert api_calls(cf_sandbox) == 0


def test_it_picks_the_grant_that_holds_the_scopes(cf_sandbox, staff_actor, acme, acme_grant, zone):
    reader = sandbox_grant(
        cf_sandbox,
        client=acme,
        user_email="bob@example.com",
        scopes=["offline_access", "account-settings.read", "zone.read"],
    )
    assert reader.pk != acme_grant.pk
    record = run(staff_actor, acme, "dns.record.create", CREATE, zone=zone)
    assert record.outcome == "succeeded" and record.grant_id == acme_grant.pk
