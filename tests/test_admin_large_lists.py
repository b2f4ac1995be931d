"""The grant list at fleet size: later pages read by id, sorts served by an index in both
directions, searches by id sets, the accounts counter kept in step, and the unfiltered count
taken from the planner's statistics on PostgreSQL. Each gives the same rows as the plain query."""

from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from agencyportal.admin_base import EstimatedCountPaginator
from connections.models import Grant
from tests import factories

URL = "/admin/connections/grant/"


def shown_emails(body: str) -> list[str]:
    return re.findall(r'class="field-cf_user_email"><a [^>]*>([^<]+)</a>', body)


@pytest.fixture
def small_pages(monkeypatch):
    monkeypatch.setattr(admin.site._registry[Grant], "list_per_page", 4)


@pytest.fixture
def eleven_grants(db):
    app = factories.OAuthAppFactory()
    client = factories.ClientFactory()
    accounts = [factories.CloudflareAccountFactory(client=client) for _ in range(3)]
    grants = [factories.GrantFactory(app=app, client=client) for _ in range(11)]
    for i, grant in enumerate(grants):
        grant.accounts.set(accounts[: i % 4])
    return grants


def test_it_keeps_the_accounts_counter_in_step_with_the_accounts_a_grant_reaches(db):
    grant = factories.GrantFactory()
    a, b, c = (factories.CloudflareAccountFactory(client=grant.client) for _ in range(3))

    def count() -> int:
        return Grant.objects.values_list("accounts_count", flat=True).get(pk=grant.pk)

    grant.accounts.set([a, b])
    assert count() == 2
    grant.accounts.add(c)
    assert count() == 3
    grant.accounts.remove(a)
    assert count() == 2
    a.grants.add(grant)  # from the account's side
    assert count() == 3
    c.grants.clear()
    assert count() == 2
    grant.accounts.clear()
    assert count() == 0


def test_it_lists_the_same_rows_on_every_page_as_the_plain_order(admin_client, small_pages, eleven_grants):
    expected = list(Grant.objects.order_by("-authorized_at", "-pk").values_list("cf_user_email", flat=True))
    pages = [shown_emails(admin_client.get(URL, {"p": p}).content.decode()) for p in (1, 2, 3)]
    assert pages == [expected[0:4], expected[4:8], expected[8:11]]


@pytest.mark.parametrize("o, descending", [("6", False), ("-6", True)])
def test_it_sorts_grants_by_accounts_reached_in_both_directions(
    admin_client, small_pages, eleven_grants, o, descending
):
    ordering = ("-accounts_count", "-pk") if descending else ("accounts_count", "pk")
    expected = list(Grant.objects.order_by(*ordering).values_list("cf_user_email", flat=True))
    pages = [shown_emails(admin_client.get(URL, {"o": o, "p": p}).content.decode()) for p in (1, 2, 3)]
    assert sum(pages, []) == expected


def test_it_finds_grants_by_email_client_account_or_zone_name_once_each(admin_client):
    client = factories.ClientFactory(name="Hooli Holdings")
    factories.GrantFactory(client=client, cf_user_email="gavin@hooli.example")
    account = factories.CloudflareAccountFactory(client=factories.ClientFactory(), name="Pied Piper prod")
    by_account = factories.GrantFactory(client=account.client, cf_user_email="richard@pp.example")
    by_account.accounts.add(account)
    zone_account = factories.CloudflareAccountFactory(client=factories.ClientFactory(), name="Aviato")
    factories.ZoneFactory(account=zone_account, name="raviga.example")
    factories.ZoneFactory(account=zone_account, name="raviga-two.example")  # two matching zones: one row
    by_zone = factories.GrantFactory(client=zone_account.client, cf_user_email="erlich@aviato.example")
    by_zone.accounts.add(zone_account)
    factories.GrantFactory(cf_user_email="nobody@else.example")

    def found(q: str) -> list[str]:
        return sorted(shown_emails(admin_client.get(URL, {"q": q}).content.decode()))

    assert found("HOOLI") == ["gavin@hooli.example"]
    assert found("pied piper") == ["richard@pp.example"]
    assert found("raviga") == ["erlich@aviato.example"]
    assert found("erlich@") == ["erlich@aviato.example"]
    assert found("example") == sorted(
        ["gavin@hooli.example", "richard@pp.example", "erlich@aviato.example", "nobody@else.example"]
    )


def test_later_pages_sorts_and_searches_cost_the_same_queries_as_the_first_page(
    admin_client, small_pages, eleven_grants
):
    def queries(**params) -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert admin_client.get(URL, params).status_code == 200
        return len(ctx.captured_queries)

    first = queries()
    assert queries(p=3) == first
    assert queries(o="6", p=2) == first
    assert queries(q="owner") == first
    assert queries(q="owner", p=2) == first


@pytest.mark.postgres
def test_it_counts_an_unfiltered_large_list_from_the_planner_statistics(admin_client, eleven_grants, monkeypatch):
    monkeypatch.setattr(EstimatedCountPaginator, "ESTIMATE_ABOVE", 5)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE connections_grant")
    url = reverse("admin:connections_grant_changelist")
    with CaptureQueriesContext(connection) as ctx:
        body = admin_client.get(url).content.decode()
    counts = [q["sql"] for q in ctx.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("pg_class" in sql and "reltuples" in sql for sql in counts), counts
    assert "11 grants" in body
    # A filtered list is counted exactly.
    with CaptureQueriesContext(connection) as ctx:
        admin_client.get(url, {"status__exact": "active"})
    assert any('COUNT(*) AS "__count" FROM "connections_grant"' in q["sql"] for q in ctx.captured_queries)


def test_it_flags_a_grant_missing_a_required_scope_whoever_writes_its_scopes(db):
    app = factories.OAuthAppFactory()
    grant = factories.GrantFactory(app=app)

    def flagged() -> bool:
        return Grant.objects.values_list("scope_missing", flat=True).get(pk=grant.pk)

    assert not flagged()
    required = app.required_scopes[0]
    # A bulk UPDATE (as the refresh engine writes a narrower scope list) is seen too.
    Grant.objects.filter(pk=grant.pk).update(granted_scopes=[s for s in grant.granted_scopes if s != required])
    assert flagged()
    # The app no longer requiring it clears the flag of its grants.
    app.required_scopes = [s for s in app.required_scopes if s != required]
    app.save()
    assert not flagged()
    # A grant created without a required scope is flagged from the start; save() keeps the flag.
    app.required_scopes = [*app.required_scopes, "analytics.read"]
    app.save()
    late = factories.GrantFactory(app=app, granted_scopes=["zone.read"])
    late.save()
    assert Grant.objects.get(pk=late.pk).scope_missing
    assert flagged()


def test_the_client_page_shows_its_latest_grants_and_links_to_all_of_them(admin_client, monkeypatch):
    from clients.admin import GrantInline

    monkeypatch.setattr(GrantInline, "SHOWN", 3)
    client = factories.ClientFactory()
    app = factories.OAuthAppFactory()
    grants = [factories.GrantFactory(client=client, app=app) for _ in range(5)]
    factories.GrantFactory(app=app, cf_user_email="someone@else.example")
    page = admin_client.get(reverse("admin:clients_client_change", args=[client.pk])).content.decode()
    latest = Grant.objects.filter(client=client).order_by("-authorized_at", "-pk")
    shown = [g.cf_user_email for g in grants if g.cf_user_email in page]
    assert sorted(shown) == sorted(g.cf_user_email for g in latest[:3])
    link = re.search(r'href="([^"]+)" id="client-all-grants"', page).group(1).replace("&amp;", "&")
    listed = admin_client.get(link).content.decode()
    assert sorted(shown_emails(listed)) == sorted(g.cf_user_email for g in grants)


def test_the_zones_list_filters_by_client_and_lists_the_clients_only_while_they_are_few(admin_client, monkeypatch):
    from clients.admin import ZoneClientFilter

    accounts = [factories.CloudflareAccountFactory(client=factories.ClientFactory(name=f"Client {c}")) for c in "ABC"]
    for account in accounts:
        factories.ZoneFactory(account=account, name=f"zone-of-{account.client.name[-1].lower()}.example")
    url = reverse("admin:clients_zone_changelist")
    b = accounts[1].client.pk

    def listed(body: str) -> bool:  # the sidebar's link to client B's zones
        return f"?account__client__id__exact={b}" in body

    assert listed(admin_client.get(url).content.decode())  # three clients: listed
    monkeypatch.setattr(ZoneClientFilter, "LISTED", 2)
    body = admin_client.get(url).content.decode()
    assert not listed(body) and "zone-of-b.example" in body
    chosen = admin_client.get(url, {"account__client__id__exact": b}).content.decode()
    assert "zone-of-b.example" in chosen and "zone-of-a.example" not in chosen
    assert listed(chosen)  # the chosen one is shown as the active filter
    assert admin_client.get(url, {"account__client__id__exact": "x"}).status_code in (200, 302)
