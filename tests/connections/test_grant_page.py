"""The grant page is a page staff work from: a title that says which grant, and page-level actions."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from agencyportal import roles
from connections.models import Grant
from tests import factories
from tests.sandbox_grants import mint_grants, register_app


def _page(client, grant: Grant) -> str:
    response = client.get(reverse("admin:connections_grant_change", args=[grant.pk]))
    assert response.status_code == 200
    return response.content.decode()


def _action_url(grant: Grant, name: str) -> str:
    return reverse("admin:connections_grant_page_action", args=[grant.pk, name])


def test_it_titles_the_page_with_the_client_and_the_cloudflare_user(admin_client):
    grant = factories.GrantFactory(client=factories.ClientFactory(name="Bigshop Ltd"), cf_user_email="bob@example.com")
    body = _page(admin_client, grant)
    assert "<h1>Grant: Bigshop Ltd, bob@example.com</h1>" in body
    assert "Change grant" not in body


def test_it_shows_the_four_actions_on_a_live_grant(admin_client):
    body = _page(admin_client, factories.GrantFactory())
    for name in ("refresh", "check", "reconsent", "disconnect"):
        assert f'data-page-action="{name}"' in body


def test_it_shows_no_actions_on_an_ended_grant(admin_client):
    body = _page(admin_client, factories.GrantFactory(status=Grant.Status.REVOKED, ended_at=timezone.now()))
    assert "data-page-action" not in body


def test_support_sees_the_page_without_buttons_and_cannot_post_an_action(client, db):
    support = factories.StaffFactory(username="support")
    support.groups.add(Group.objects.get(name=roles.SUPPORT))
    client.force_login(support)
    grant = factories.GrantFactory()
    assert "data-page-action" not in _page(client, grant)
    response = client.post(_action_url(grant, "disconnect"), {"confirm": "yes"})
    assert response.status_code == 403
    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE


def test_an_account_manager_cannot_act_on_another_managers_grant(client, db):
    manager = factories.StaffFactory(username="manager")
    manager.groups.add(Group.objects.get(name=roles.ACCOUNT_MANAGER))
    client.force_login(manager)
    theirs = factories.GrantFactory(client=factories.ClientFactory(account_manager=factories.StaffFactory()))
    assert client.post(_action_url(theirs, "check")).status_code == 404


def test_it_refuses_a_get_and_an_unknown_action(admin_client):
    grant = factories.GrantFactory()
    assert admin_client.get(_action_url(grant, "refresh")).status_code == 405
    assert admin_client.post(_action_url(grant, "delete")).status_code == 404


def test_it_asks_before_disconnecting_then_disconnects_and_returns_to_the_page(admin_client):
    grant = factories.GrantFactory()
    confirm = admin_client.post(_action_url(grant, "disconnect"))
    assert confirm.status_code == 200 and "Yes, disconnect" in confirm.content.decode()
    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE  # nothing happens before the confirmation
    done = admin_client.post(
        _action_url(grant, "disconnect"),
        {"action": "disconnect_grants", "_selected_action": grant.pk, "confirm": "yes"},
    )
    assert done.status_code == 302 and done["Location"] == reverse("admin:connections_grant_change", args=[grant.pk])
    grant.refresh_from_db()
    assert grant.status in (Grant.Status.DISCONNECTING, Grant.Status.DISCONNECTED)


@pytest.mark.sandbox
def test_refresh_now_on_the_page_rotates_the_token_at_the_sandbox(admin_client, cf_sandbox):
    app = register_app(cf_sandbox)
    grant = mint_grants(cf_sandbox, app=app, client=factories.ClientFactory(), count=1)[0]
    before = Grant.objects.get(pk=grant.pk).refresh_generation
    response = admin_client.post(_action_url(grant, "refresh"), follow=True)
    assert "1 refreshed" in response.content.decode()
    assert Grant.objects.get(pk=grant.pk).refresh_generation == before + 1


def test_the_health_column_shows_no_health_for_an_ended_grant(admin_client):
    factories.GrantFactory(cf_user_email="live@x.example", health=Grant.Health.HEALTHY)
    factories.GrantFactory(
        cf_user_email="gone@x.example",
        status=Grant.Status.DISCONNECTED,
        ended_at=timezone.now(),
        end_reason=Grant.EndReason.DISCONNECTED_BY_CLIENT,
        health=Grant.Health.HEALTHY,
    )
    body = admin_client.get(reverse("admin:connections_grant_changelist")).content.decode()
    assert body.count('<td class="field-health_state">Healthy</td>') == 1
    assert "— (ended: Disconnected by the client)" in body
