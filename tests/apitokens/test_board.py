"""The migration board: counts per state, filters, CSV export, a constant query count; the sweep."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone

from apitokens import services
from apitokens.models import ApiToken, TokenAlert
from tests import factories

from .test_inventory import fake_token

pytestmark = pytest.mark.django_db


def _tokens(n: int, *, state: str = "token_only", client=None) -> list[ApiToken]:
    made = []
    for _ in range(n):
        owner = client or factories.ClientFactory()
        token = services.api_token_create(
            client=owner, name="t", token=fake_token(), purpose="customer", created_by=None
        )
        ApiToken.objects.filter(pk=token.pk).update(state=state, status="active", mapped_scopes=["zone.read"])
        made.append(token)
    return made


def test_the_board_counts_each_state_filters_and_exports(admin_client):
    _tokens(2)
    invited = _tokens(1, state="invited")[0]
    _tokens(1, state="cut_over")
    page = admin_client.get("/admin/apitokens/apitoken/board/")
    counts = page.context["states"]
    assert {s: n for s, _, n in counts} == {
        "token_only": 2,
        "invited": 1,
        "connected": 0,
        "parity": 0,
        "cut_over": 1,
        "removing": 0,
        "removed": 0,
    }
    filtered = admin_client.get("/admin/apitokens/apitoken/board/?state=invited")
    assert [t.pk for t in filtered.context["tokens"]] == [invited.pk]
    export = admin_client.get("/admin/apitokens/apitoken/board/export/?state=invited")
    rows = list(csv.reader(io.StringIO(export.content.decode())))
    assert rows[0][:4] == ["client", "token", "fingerprint", "state"] and len(rows) == 2
    assert rows[1][3] == "Invited" and rows[1][2] == invited.fingerprint_short


def test_the_board_and_the_token_list_keep_their_query_count(admin_client, django_assert_num_queries):
    _tokens(1)
    counts = {}
    for url in ("/admin/apitokens/apitoken/board/", "/admin/apitokens/apitoken/"):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as one:
            assert admin_client.get(url).status_code == 200
        counts[url] = len(one.captured_queries)
    _tokens(20)
    for url, count in counts.items():
        with django_assert_num_queries(count):
            admin_client.get(url)


def test_the_sweep_reminds_before_the_window_ends_then_starts_the_removal(mailoutbox):
    owner = factories.ClientMemberFactory()
    (token,) = _tokens(1, state="cut_over", client=owner.client)
    now = timezone.now()
    ApiToken.objects.filter(pk=token.pk).update(standby_until=now + timedelta(days=1), cut_over_at=now)
    assert services.migration_sweep(now=now)["reminded"] == 1
    assert services.migration_sweep(now=now)["reminded"] == 0
    assert TokenAlert.objects.get(token=token).kind == "window_ending"

    later = now + timedelta(days=2)
    assert services.migration_sweep(now=later)["removal_started"] == 1
    token.refresh_from_db()
    assert token.state == "removing" and mailoutbox and mailoutbox[-1].to == [owner.user.email]


def test_rollback_is_refused_after_the_window(agency_admin):
    (token,) = _tokens(1, state="cut_over")
    ApiToken.objects.filter(pk=token.pk).update(standby_until=timezone.now() - timedelta(minutes=1))
    with pytest.raises(services.MigrationError, match="only while the token is on standby"):
        services.rollback(token=ApiToken.objects.get(pk=token.pk), by=agency_admin)


def test_a_staff_member_can_erase_a_token_with_a_confirmation(admin_client):
    (token,) = _tokens(1, state="cut_over")
    url = f"/admin/apitokens/apitoken/{token.pk}/step/erase/"
    admin_client.post(url)
    assert ApiToken.objects.get(pk=token.pk).status == "active"
    admin_client.post(url, {"confirm": "yes"})
    token.refresh_from_db()
    assert token.status == "erased" and token.token == "" and token.events.filter(kind="erased").exists()


def test_token_alerts_are_delivered_by_email_once(settings, mailoutbox):
    from apitokens.alerts import token_alert_deliver

    settings.STAFF_ALERT_EMAILS = ["ops@agency.example"]
    (token,) = _tokens(1)
    alert = services.alert_open(token=token, kind="token_expired", message="The API token t has expired.")
    token_alert_deliver(alert_id=alert.pk)
    token_alert_deliver(alert_id=alert.pk)
    assert len(mailoutbox) == 1 and "API token expired" in mailoutbox[0].subject
    assert token.token not in mailoutbox[0].body


def test_an_opened_token_alert_is_delivered_through_its_task_after_commit(
    settings, mailoutbox, django_capture_on_commit_callbacks
):
    settings.STAFF_ALERT_EMAILS = ["ops@agency.example"]
    settings.CELERY_TASK_ALWAYS_EAGER = True
    (token,) = _tokens(1)
    with django_capture_on_commit_callbacks(execute=True):
        alert = services.alert_open(token=token, kind="token_expired", message="The API token t has expired.")
        assert not mailoutbox  # not before the commit
    assert len(mailoutbox) == 1
    assert TokenAlert.objects.get(pk=alert.pk).delivered_at is not None


def test_an_invitation_is_refused_while_the_app_does_not_request_a_mapped_scope(oauth_app, agency_admin, mailoutbox):
    owner = factories.ClientMemberFactory()
    (token,) = _tokens(1, client=owner.client)
    ApiToken.objects.filter(pk=token.pk).update(mapped_scopes=["zone.read", "zone-settings.read"])
    with pytest.raises(services.MigrationError, match="does not request zone-settings.read"):
        services.migration_invite(token=ApiToken.objects.get(pk=token.pk), sent_by=agency_admin)
    assert ApiToken.objects.get(pk=token.pk).state == "token_only" and not mailoutbox


def test_the_token_alert_list_renders_without_loading_tokens(admin_client):
    (token,) = _tokens(1)
    services.alert_open(token=token, kind="token_invalid", message="The API token t no longer works.")
    page = admin_client.get("/admin/apitokens/tokenalert/")
    assert page.status_code == 200 and "no longer works" in page.content.decode()


def test_an_account_manager_sees_and_counts_only_their_own_clients_tokens(client):
    from django.contrib.auth.models import Group

    from agencyportal import roles

    manager = factories.StaffFactory(username="manager")
    manager.groups.add(Group.objects.get(name=roles.ACCOUNT_MANAGER))
    mine = _tokens(1, client=factories.ClientFactory(account_manager=manager))[0]
    _tokens(3)
    client.force_login(manager)
    board = client.get("/admin/apitokens/apitoken/board/")
    assert [t.pk for t in board.context["tokens"]] == [mine.pk]
    assert {s: n for s, _, n in board.context["states"]}["token_only"] == 1
    assert client.get(f"/admin/apitokens/apitoken/{_tokens(1)[0].pk}/change/").status_code == 302
    dashboard = client.get("/admin/").content.decode()
    tiles = dashboard[dashboard.index('id="migration-tiles"') :]
    assert '<span class="fleet-value">1</span><span class="fleet-label">Clients still on API tokens' in tiles


def test_a_tokens_page_and_its_portal_page_keep_their_query_count_as_events_grow(
    admin_client, agency_admin, django_assert_num_queries
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    member = factories.ClientMemberFactory()
    (token,) = _tokens(1, state="invited", client=member.client)
    admin_url = f"/admin/apitokens/apitoken/{token.pk}/change/"
    portal_url = f"/portal/migration/{token.code}/"
    from django.test import Client as Browser

    contact = Browser()
    contact.force_login(member.user)
    counts = {}
    for browser, url in ((admin_client, admin_url), (contact, portal_url)):
        browser.get(url)  # warm: the session and the content-type cache
        with CaptureQueriesContext(connection) as one:
            assert browser.get(url).status_code == 200
        counts[url] = len(one.captured_queries)
    for _ in range(15):
        services.event_record(token=token, kind="verified", actor=agency_admin, message="seen")
    for browser, url in ((admin_client, admin_url), (contact, portal_url)):
        with django_assert_num_queries(counts[url]):
            browser.get(url)


def test_the_board_shows_a_bounded_number_of_rows_and_says_how_to_see_the_others(admin_client, monkeypatch):
    from apitokens.admin import ApiTokenAdmin

    monkeypatch.setattr(ApiTokenAdmin, "BOARD_ROWS", 3)
    made = _tokens(4)
    page = admin_client.get("/admin/apitokens/apitoken/board/")
    assert len(page.context["tokens"]) == 3
    assert 'id="board-more"' in page.content.decode()
    assert {s: n for s, _, n in page.context["states"]}["token_only"] == 4  # the counts cover every token
    export = admin_client.get("/admin/apitokens/apitoken/board/export/")
    assert len(list(csv.reader(io.StringIO(export.content.decode())))) == 1 + len(made)
    ApiToken.objects.filter(pk=made[0].pk).delete()
    assert 'id="board-more"' not in admin_client.get("/admin/apitokens/apitoken/board/").content.decode()


def test_the_board_filters_by_client_through_a_search_box_not_a_list_of_every_client(admin_client):
    others = [factories.ClientFactory(name=f"Unrelated {i}") for i in range(5)]
    made = _tokens(2)
    page = admin_client.get("/admin/apitokens/apitoken/board/")
    body = page.content.decode()
    assert "admin-autocomplete" in body
    assert not any(c.name in body for c in others)  # no <option> per client
    client = made[0].client
    filtered = admin_client.get("/admin/apitokens/apitoken/board/", {"client": client.pk})
    assert {t.pk for t in filtered.context["tokens"]} == {t.pk for t in made if t.client_id == client.pk}
