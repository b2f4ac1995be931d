"""Staff pages (DNS records, add / edit / delete with confirmation, purge), sections, CSV, scope audit."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from operations.checks import check_app_scopes
from operations.models import ActionRecord
from operations.services import action_run

from .conftest import api_calls

pytestmark = pytest.mark.django_db


def _add(admin_client, zone, **fields):
    url = reverse("admin:operations_dns_add", args=[zone.pk])
    data = {"type": "TXT", "name": "n", "content": "c", "ttl": "1", **fields}
    preview = admin_client.post(url, {**data, "preview": "1"})
    assert preview.status_code == 200
    return url, preview


def test_staff_add_a_record_through_a_confirmation(cf_sandbox, admin_client, acme_grant, zone):
    url, preview = _add(admin_client, zone, name="www2", type="A", content="203.0.113.7")
    assert b"before-after" in preview.content and b"203.0.113.7" in preview.content
    assert ActionRecord.objects.count() == 0  # a preview writes nothing
    inputs = preview.context["inputs_json"]
    done = admin_client.post(url, {"confirm": "1", "inputs": inputs})
    assert done.status_code == 302
    record = ActionRecord.objects.get()
    assert record.action_id == "dns.record.create" and record.succeeded
    page = admin_client.get(reverse("admin:operations_dns", args=[zone.pk]), {"type": "A", "name": "www2"})
    assert f"www2.{zone.name}".encode() in page.content


def test_invalid_record_shows_the_error_and_calls_nothing(cf_sandbox, admin_client, acme_grant, zone):
    _url, preview = _add(admin_client, zone, type="A", content="999.1.1.1")
    assert b"IPv4" in preview.content
    assert api_calls(cf_sandbox) == 0


def test_staff_edit_a_record_and_see_before_and_after(cf_sandbox, admin_client, agency_admin, acme, acme_grant, zone):
    from operations.gate import Actor

    created = action_run(
        actor=Actor(user=agency_admin),
        action_id="dns.record.create",
        client=acme,
        zone=zone,
        inputs={"type": "A", "name": "edit", "content": "203.0.113.1"},
    )
    url = reverse("admin:operations_dns_edit", args=[zone.pk, created.result["record_id"]])
    form = admin_client.get(url)
    assert form.context["form"].initial["content"] == "203.0.113.1"
    preview = admin_client.post(
        url, {"type": "A", "name": "edit", "content": "203.0.113.9", "ttl": "1", "preview": "1"}
    )
    assert b"203.0.113.1" in preview.content and b"203.0.113.9" in preview.content
    admin_client.post(url, {"confirm": "1", "inputs": preview.context["inputs_json"]})
    update = ActionRecord.objects.get(action_id="dns.record.update")
    assert (update.result["before"]["content"], update.result["after"]["content"]) == ("203.0.113.1", "203.0.113.9")


def test_staff_delete_a_record_after_confirming(cf_sandbox, admin_client, agency_admin, acme, acme_grant, zone):
    from operations.gate import Actor

    created = action_run(
        actor=Actor(user=agency_admin),
        action_id="dns.record.create",
        client=acme,
        zone=zone,
        inputs={"type": "TXT", "name": "gone", "content": "x"},
    )
    url = reverse("admin:operations_dns_delete", args=[zone.pk, created.result["record_id"]])
    confirm = admin_client.get(url)
    assert b"will be removed" in confirm.content
    admin_client.post(url, {"confirm": "1", "inputs": json.dumps({"record_id": created.result["record_id"]})})
    assert ActionRecord.objects.get(action_id="dns.record.delete").result["already_gone"] is False


@pytest.mark.parametrize(
    ("mode", "values"),
    [
        ("everything", ""),
        ("urls", "https://a.example/x\nhttps://a.example/y"),
        ("hostnames", "a.example"),
        ("tags", "blog"),
        ("prefixes", "a.example/blog"),
    ],
)
def test_staff_purge_the_cache_after_confirming(cf_sandbox, admin_client, acme_grant, zone, mode, values):
    url = reverse("admin:operations_purge", args=[zone.pk])
    preview = admin_client.post(url, {"mode": mode, "values": values, "preview": "1"})
    assert b"confirm-form" in preview.content
    admin_client.post(url, {"confirm": "1", "inputs": preview.context["inputs_json"]})
    assert ActionRecord.objects.get(action_id="cache.purge").succeeded


def test_the_dns_page_keeps_its_query_count_whatever_the_record_count(
    cf_sandbox, admin_client, agency_admin, acme, acme_grant, zone, django_assert_num_queries
):
    from operations.gate import Actor

    url = reverse("admin:operations_dns", args=[zone.pk])
    admin_client.get(url)  # warm the session and today's read counter
    with CaptureQueriesContext(connection) as one:
        admin_client.get(url)
    for n in range(20):
        action_run(
            actor=Actor(user=agency_admin),
            action_id="dns.record.create",
            client=acme,
            zone=zone,
            inputs={"type": "TXT", "name": f"many{n}", "content": "x"},
        )
    with django_assert_num_queries(len(one.captured_queries)):
        page = admin_client.get(url)
    assert len(page.context["records"]) >= 20


def test_grant_client_and_changelist_pages_keep_their_query_count(
    cf_sandbox, admin_client, agency_admin, acme, acme_grant, zone, django_assert_num_queries
):
    from operations.gate import Actor

    def write():
        action_run(
            actor=Actor(user=agency_admin),
            action_id="cache.purge",
            client=acme,
            zone=zone,
            inputs={"mode": "everything"},
        )

    write()
    urls = [
        reverse("admin:connections_grant_change", args=[acme_grant.pk]),
        reverse("admin:clients_client_change", args=[acme.pk]),
        reverse("admin:operations_actionrecord_changelist"),
    ]
    counts = {}
    for url in urls:
        admin_client.get(url)
        with CaptureQueriesContext(connection) as q:
            page = admin_client.get(url)
        assert page.status_code == 200
        counts[url] = len(q.captured_queries)
    for _ in range(15):
        write()
    for url in urls:
        with django_assert_num_queries(counts[url]):
            page = admin_client.get(url)
        assert b"cache.purge" in page.content


def test_the_csv_export_neutralises_every_cell(cf_sandbox, admin_client, agency_admin, acme, acme_grant, zone):
    from operations.gate import Actor

    acme.name = '=HYPERLINK("http://evil")'
    acme.save()
    action_run(
        actor=Actor(user=agency_admin),
        action_id="dns.record.create",
        client=acme,
        zone=zone,
        inputs={"type": "TXT", "name": "csv", "content": "-2+3"},
    )
    response = admin_client.post(
        reverse("admin:operations_actionrecord_changelist"),
        {"action": "export_csv", "_selected_action": list(ActionRecord.objects.values_list("pk", flat=True))},
    )
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    cells = [cell for row in rows[1:] for cell in row]
    assert '\'=HYPERLINK("http://evil")' in cells
    assert not any(cell[:1] in "=+-@" and cell for cell in cells)


def test_the_portal_shows_what_the_agency_changed_and_what_it_can_do(
    cf_sandbox, client, client_owner, agency_admin, acme, acme_grant, zone
):
    from operations.gate import Actor

    action_run(
        actor=Actor(user=agency_admin),
        action_id="dns.record.create",
        client=acme,
        zone=zone,
        inputs={"type": "TXT", "name": "portal", "content": "hello"},
    )
    action_run(actor=Actor(user=agency_admin), action_id="dns.records.list", client=acme, zone=zone, inputs={})
    client.force_login(client_owner)
    page = client.get(reverse("clients:home")).content.decode()
    assert "What the agency changed in your Cloudflare account" in page
    assert f"Added the DNS TXT record portal.{zone.name}" in page
    assert "agency-admin" not in page  # staff names stay in the admin
    assert 'data-action="cache.purge"' in page


def test_the_scope_audit_flags_scopes_no_action_uses(cf_sandbox, admin_client, acme_grant):
    app = acme_grant.app
    app.optional_scopes = [*app.optional_scopes, "analytics.read"]
    app.save()
    page = admin_client.get(reverse("admin:connections_oauthapp_change", args=[app.pk]))
    assert b"unused-scopes" in page.content and b"analytics.read" in page.content
    warnings = [w for w in check_app_scopes() if w.obj == app]
    assert [w.id for w in warnings] == ["operations.W001"] and "analytics.read" in warnings[0].msg
