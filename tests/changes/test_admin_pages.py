"""The bulk change pages: start from the zones list, the dry run page, confirm, progress, roles."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from agencyportal import roles
from changes.models import Change, ChangeItem
from tests import factories
from tests.operations.conftest import api_calls

from .conftest import zoned_client

pytestmark = pytest.mark.django_db


def _staff(username: str, role: str):
    user = factories.StaffFactory(username=username)
    user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def north(cf_sandbox, ops_app):
    return zoned_client(cf_sandbox, slug="pages-north", zones=6, app=ops_app)


@pytest.fixture
def eager_commit(eager, django_capture_on_commit_callbacks):
    def run(fn):
        with django_capture_on_commit_callbacks(execute=True):
            return fn()

    return run


def test_it_offers_the_bulk_change_on_the_zones_list_and_shows_the_form(client, agency_admin, north):
    client.force_login(agency_admin)
    zones = north.zones[:3]
    response = client.post(
        reverse("admin:clients_zone_changelist"),
        {"action": "start_bulk_change", "_selected_action": [z.pk for z in zones]},
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert body.count("<h1>") == 1 and "<h1>Start a bulk change</h1>" in body
    assert body.count('name="zones"') == 3
    assert Change.objects.count() == 0


def test_it_runs_the_dry_run_then_the_change_from_the_pages(client, agency_admin, north, cf_sandbox, eager_commit):
    client.force_login(agency_admin)
    zones = north.zones
    response = eager_commit(
        lambda: client.post(
            reverse("admin:changes_change_new"),
            {"zones": [z.pk for z in zones], "plan": "cache.purge", "purge_mode": "everything"},
        )
    )
    change = Change.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(f"/{change.pk}/change/")
    page = client.get(response["Location"]).content.decode()
    assert "Run on 6 zones" in page and page.count("<h1>") == 1
    eager_commit(lambda: client.post(reverse("admin:changes_change_confirm", args=[change.pk])))
    progress = client.get(reverse("admin:changes_change_progress", args=[change.pk])).json()
    assert progress["status"] == "finished" and progress["counts"] == {"done": 6} and progress["open"] == 0
    assert api_calls(cf_sandbox) == 6


def test_a_bad_input_shows_the_form_again_and_creates_nothing(client, agency_admin, north, cf_sandbox):
    client.force_login(agency_admin)
    response = client.post(
        reverse("admin:changes_change_new"),
        {
            "zones": [z.pk for z in north.zones],
            "plan": "dns.record.create",
            "create_type": "A",
            "create_name": "www",
            "create_content": "not-an-ip",
        },
    )
    assert response.status_code == 200
    assert "IPv4 address" in response.content.decode()
    assert Change.objects.count() == 0 and ChangeItem.objects.count() == 0
    assert api_calls(cf_sandbox) == 0


def test_support_cannot_start_a_bulk_change(client, north, cf_sandbox):
    support = _staff("support-bulk", roles.SUPPORT)
    client.force_login(support)
    response = client.post(
        reverse("admin:changes_change_new"),
        {"zones": [z.pk for z in north.zones], "plan": "cache.purge", "purge_mode": "everything"},
    )
    assert response.status_code == 403
    listing = client.post(
        reverse("admin:clients_zone_changelist"),
        {"action": "start_bulk_change", "_selected_action": [north.zones[0].pk]},
    )
    assert b"Start a bulk change" not in listing.content
    assert Change.objects.count() == 0 and api_calls(cf_sandbox) == 0


def test_an_account_manager_only_reaches_own_clients_zones(client, north, cf_sandbox, ops_app, eager_commit):
    manager = _staff("manager-bulk", roles.ACCOUNT_MANAGER)
    mine = zoned_client(cf_sandbox, slug="pages-mine", zones=2, app=ops_app)
    mine.client.account_manager = manager
    mine.client.save(update_fields=["account_manager"])
    client.force_login(manager)
    # Zone ids of another client are dropped: not found for this manager.
    eager_commit(
        lambda: client.post(
            reverse("admin:changes_change_new"),
            {"zones": [z.pk for z in [*mine.zones, *north.zones]], "plan": "cache.purge", "purge_mode": "everything"},
        )
    )
    change = Change.objects.get()
    assert set(ChangeItem.objects.filter(change=change).values_list("client_id", flat=True)) == {mine.client.pk}


def test_the_change_page_keeps_a_constant_number_of_queries(
    client, agency_admin, cf_sandbox, ops_app, django_assert_num_queries, eager_commit
):
    from changes.services import change_create

    client.force_login(agency_admin)
    small = zoned_client(cf_sandbox, slug="pages-small", zones=2, app=ops_app)
    big = zoned_client(cf_sandbox, slug="pages-big", zones=12, app=ops_app)
    counts = []
    for zc in (small, big):
        change = eager_commit(
            lambda zc=zc: change_create(
                user=agency_admin, plan_id="cache.purge", inputs={"mode": "everything"}, zones=zc.zones
            )
        )
        url = reverse("admin:changes_change_change", args=[change.pk])
        client.get(url)  # warm the session
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as ctx:
            assert client.get(url).status_code == 200
        counts.append(len(ctx.captured_queries))
        with CaptureQueriesContext(connection) as ctx:
            client.get(reverse("admin:changes_change_progress", args=[change.pk]))
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[2] and counts[1] == counts[3]
