"""An account manager sees and acts only on their own clients, by every admin route;
support sees everything and changes nothing."""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from agencyportal import roles
from connections.models import Alert, GrantEvent
from tests import factories


def _staff_in(group: str, username: str):
    user = factories.StaffFactory(username=username)
    user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def world(db):
    """Two managers, each with one client, a grant, an account, a zone, an event and an open alert."""
    out = {}
    for who in ("mine", "theirs"):
        manager = _staff_in(roles.ACCOUNT_MANAGER, f"manager-{who}")
        client = factories.ClientFactory(name=f"Client {who.title()}", account_manager=manager)
        grant = factories.GrantFactory(client=client, cf_user_email=f"owner@{who}.example")
        account = factories.CloudflareAccountFactory(client=client, name=f"Account {who}")
        factories.ZoneFactory(account=account, name=f"{who}.example")
        grant.accounts.add(account)
        factories.GrantEventFactory(grant=grant, message=f"event of {who}")
        factories.AlertFactory(grant=grant, message=f"alert of {who}")
        member = factories.ClientMemberFactory(client=client)
        out[who] = {"manager": manager, "client": client, "grant": grant, "account": account, "member": member}
    return out


@pytest.fixture
def manager_client(client, world):
    client.force_login(world["mine"]["manager"])
    return client


def test_it_lists_only_the_managers_own_clients_everywhere(manager_client, world):
    for name in (
        "clients_client",
        "connections_grant",
        "connections_grantevent",
        "connections_alert",
        "clients_cloudflareaccount",
        "clients_zone",
        "clients_clientmember",
    ):
        body = manager_client.get(reverse(f"admin:{name}_changelist")).content.decode()
        assert "mine" in body.lower(), name
        assert "theirs" not in body.lower(), name


def test_it_finds_nothing_of_another_manager_by_search(manager_client, world):
    body = manager_client.get(
        reverse("admin:connections_grant_changelist"), {"q": "owner@theirs.example"}
    ).content.decode()
    assert "0 results" in body
    assert 'field-cf_user_email">owner@theirs' not in body


@pytest.mark.parametrize(
    "name,key",
    [("connections_grant", "grant"), ("clients_client", "client"), ("clients_cloudflareaccount", "account")],
)
def test_it_does_not_open_another_managers_pages_by_url_guessing(manager_client, world, name, key):
    other = world["theirs"][key]
    response = manager_client.get(reverse(f"admin:{name}_change", args=[other.pk]))
    # The admin answers a row outside the queryset by redirecting to the index: no data shown.
    assert response.status_code == 302
    own = manager_client.get(reverse(f"admin:{name}_change", args=[world["mine"][key].pk]))
    assert own.status_code == 200


def test_it_does_not_act_on_another_managers_alerts(manager_client, world):
    theirs = Alert.objects.get(grant=world["theirs"]["grant"])
    mine = Alert.objects.get(grant=world["mine"]["grant"])
    manager_client.post(
        reverse("admin:connections_alert_changelist"),
        {"action": "acknowledge", "_selected_action": [theirs.pk, mine.pk]},
    )
    theirs.refresh_from_db()
    mine.refresh_from_db()
    assert theirs.acknowledged_at is None
    assert mine.acknowledged_at is not None


def test_it_exports_only_the_managers_own_events(manager_client, world):
    ids = list(GrantEvent.objects.values_list("pk", flat=True))
    response = manager_client.post(
        reverse("admin:connections_grantevent_changelist"), {"action": "export_csv", "_selected_action": ids}
    )
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0][0] == "at"
    clients = {row[3] for row in rows[1:]}
    assert clients == {"Client Mine"}


def test_it_autocompletes_only_the_managers_own_clients(manager_client, world):
    response = manager_client.get(
        reverse("admin:autocomplete"),
        {"app_label": "clients", "model_name": "clientmember", "field_name": "client", "term": "Client"},
    )
    names = {r["text"] for r in response.json()["results"]}
    assert names == {"Client Mine"}


def test_it_scopes_the_dashboard_numbers(manager_client, world):
    body = manager_client.get(reverse("admin:index")).content.decode()
    assert "1 grant across 1 active client" in body


def test_support_sees_everything_and_changes_nothing(client, world):
    support = _staff_in(roles.SUPPORT, "support")
    client.force_login(support)
    body = client.get(reverse("admin:connections_grant_changelist")).content.decode()
    assert "owner@mine.example" in body and "owner@theirs.example" in body
    grant = world["theirs"]["grant"]
    page = client.get(reverse("admin:clients_client_change", args=[grant.client.pk]))
    assert page.status_code == 200 and b'name="_save"' not in page.content
    alert = Alert.objects.get(grant=grant)
    client.post(
        reverse("admin:connections_alert_changelist"), {"action": "acknowledge", "_selected_action": [alert.pk]}
    )
    alert.refresh_from_db()
    assert alert.acknowledged_at is None


def test_the_roles_exist_after_migrations(db):
    assert set(Group.objects.values_list("name", flat=True)) >= {
        roles.AGENCY_ADMIN,
        roles.ACCOUNT_MANAGER,
        roles.SUPPORT,
    }
    assert not Group.objects.get(name=roles.SUPPORT).permissions.exclude(codename__startswith="view_").exists()


def test_contacts_are_only_added_by_invitation(manager_client, world):
    assert manager_client.get(reverse("admin:clients_clientmember_add")).status_code == 403
    member = world["mine"]["member"]
    page = manager_client.get(reverse("admin:clients_clientmember_change", args=[member.pk])).content.decode()
    assert 'name="user"' not in page  # the user of a contact cannot be swapped for another account
