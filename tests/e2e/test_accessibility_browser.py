"""Every portal page, and every admin page the project renders itself, passes axe-core's WCAG 2.2 AA
rules in a real browser (no violation at all)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from connections.models import Grant
from connections.services.consent import SESSION_RESULT_KEY
from tests import factories
from tests.e2e.accessibility import anonymous_session, assert_accessible, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def portal(db):
    """A client with a default app, an owner with one live grant (accounts, zones, a declined scope) and
    an owner of another client without any grant."""
    app = factories.OAuthAppFactory(is_default=True, name="Agency Portal", optional_scopes=["dns.write", "cache.purge"])
    acme = factories.ClientFactory(name="Acme Corp", slug="acme")
    owner = factories.ClientMemberFactory(client=acme, user=factories.UserFactory(username="owner@acme.example")).user
    grant = factories.GrantFactory(
        client=acme,
        app=app,
        cf_user_email="owner@acme.example",
        granted_scopes=[*app.required_scopes, "dns.write"],
        declined_scopes=["cache.purge"],
        authorized_by=owner,
    )
    account = factories.CloudflareAccountFactory(client=acme, name="Acme Corp")
    for name in ("acme.com", "acme.net"):
        factories.ZoneFactory(account=account, name=name)
    grant.accounts.add(account)
    factories.GrantFactory(
        client=acme,
        app=app,
        status=Grant.Status.DISCONNECTED,
        end_reason=Grant.EndReason.DISCONNECTED_BY_CLIENT,
        ended_at=timezone.now(),
        cf_user_email="old@acme.example",
    )
    globex = factories.ClientFactory(name="Globex", slug="globex")
    newcomer = factories.ClientMemberFactory(
        client=globex, user=factories.UserFactory(username="owner@globex.example")
    ).user
    return {"app": app, "client": acme, "owner": owner, "grant": grant, "newcomer": newcomer}


def _check(page, live_server, path: str, what: str, *, wait: str = "main") -> None:
    page.goto(f"{live_server.url}{path}")
    page.wait_for_selector(wait)
    assert_accessible(page, what)


def test_signed_out_portal_pages_pass_wcag_aa(live_server, new_page, portal):
    page = new_page()
    _check(page, live_server, "/portal/login/", "portal sign-in")
    # The sign-in form with an error shown.
    page.fill("input[name=username]", "nobody@acme.example")
    page.fill("input[name=password]", "wrong-password-here")
    page.click("#login")
    page.wait_for_selector("[role=alert]")
    assert_accessible(page, "portal sign-in with an error")
    _check(page, live_server, "/portal/invite/not-a-token/", "invalid invitation")
    _check(page, live_server, "/oauth/cloudflare/result/", "result page without a result")
    for result in ("cancelled", "upstream", "other"):
        outcome_page = new_page()
        anonymous_session(outcome_page, live_server, **{SESSION_RESULT_KEY: {"result": result, "request_id": None}})
        _check(
            outcome_page, live_server, "/oauth/cloudflare/result/", f"result page ({result})", wait="#consent-outcome"
        )


def test_portal_pages_of_a_contact_without_a_grant_pass_wcag_aa(live_server, new_page, portal):
    page = new_page()
    sign_in(page, live_server, portal["newcomer"])
    _check(page, live_server, "/portal/", "portal home, nothing connected", wait="#empty-state")
    _check(page, live_server, "/oauth/connect/", "pre-consent", wait="#continue-to-cloudflare")
    _check(page, live_server, "/portal/help/", "help")
    _check(page, live_server, "/portal/settings/", "language and time zone settings", wait="#save-settings")
    page.select_option("select[name=time_zone]", "Europe/Paris")
    page.click("#save-settings")
    page.wait_for_selector("ul.messages")
    assert_accessible(page, "settings saved")


def test_portal_pages_of_a_contact_with_a_grant_pass_wcag_aa(live_server, new_page, portal):
    grant = portal["grant"]
    page = new_page()
    sign_in(page, live_server, portal["owner"])
    _check(page, live_server, "/portal/", "portal home with a grant", wait="section.grant")
    _check(page, live_server, f"/oauth/grants/{grant.code}/disconnect/", "disconnect confirmation")
    _check(page, live_server, f"/oauth/grants/{grant.code}/add-permissions/", "add missing permissions")
    _check(page, live_server, f"/oauth/grants/{grant.code}/reconnect/", "reconnect")
    for result in ("connected", "partial", "scope_missing", "expired", "replayed"):
        outcome_page = new_page()
        sign_in(outcome_page, live_server, portal["owner"], **{SESSION_RESULT_KEY: {"result": result}})
        _check(outcome_page, live_server, "/portal/", f"portal home after consent ({result})", wait="#consent-outcome")


def test_portal_pages_of_people_who_may_not_act_pass_wcag_aa(live_server, new_page, portal):
    viewer = factories.ClientMemberFactory(
        client=portal["client"], role="viewer", user=factories.UserFactory(username="viewer@acme.example")
    ).user
    page = new_page()
    sign_in(page, live_server, viewer)
    _check(page, live_server, "/oauth/connect/", "only an owner can do this")
    staff_page = new_page()
    sign_in(staff_page, live_server, factories.StaffFactory(username="staff-on-portal"))
    _check(staff_page, live_server, "/portal/", "not a client contact")


def test_admin_pages_the_project_renders_pass_wcag_aa(live_server, new_page, portal):
    grant, client = portal["grant"], portal["client"]
    factories.GrantEventFactory(grant=grant)
    page = new_page()
    _check(page, live_server, "/admin/login/", "admin sign-in", wait="#content")
    sign_in(page, live_server, factories.SuperuserFactory(username="staff-admin"))
    for path, what in (
        ("/admin/", "admin dashboard"),
        ("/admin/connections/grant/", "grants list"),
        (f"/admin/connections/grant/{grant.pk}/change/", "grant page"),
        ("/admin/clients/client/", "clients list"),
        (f"/admin/clients/client/{client.pk}/change/", "client page"),
        ("/admin/clients/clientmember/", "client contacts list"),
        (f"/admin/connections/oauthapp/{portal['app'].pk}/change/", "OAuth app page"),
        ("/admin/apitokens/apitoken/board/", "API token migration board"),
        ("/admin/changes/change/new/", "new bulk change"),
    ):
        _check(page, live_server, path, what, wait="#content")


@pytest.mark.sandbox
def test_admin_pages_that_read_cloudflare_pass_wcag_aa(live_server, new_page, cf_sandbox):
    """The grant page of a working grant (with its operations section) and the zone pages staff use to
    change DNS records and purge the cache, all read from the sandbox."""
    from django.urls import reverse

    from clients.models import Zone
    from tests.operations.conftest import sandbox_grant

    acme = factories.ClientFactory(name="Acme Corp", slug="acme")
    grant = sandbox_grant(cf_sandbox, client=acme)
    factories.AlertFactory(grant=grant, client=acme)
    zone = Zone.objects.filter(account__grants=grant).order_by("name").first()
    page = new_page()
    sign_in(page, live_server, factories.SuperuserFactory(username="staff-admin"))
    for url, what in (
        (reverse("admin:connections_grant_change", args=[grant.pk]), "grant page of a working grant"),
        (reverse("admin:operations_dns", args=[zone.pk]), "zone DNS records"),
        (reverse("admin:operations_dns_add", args=[zone.pk]), "add a DNS record"),
        (reverse("admin:operations_purge", args=[zone.pk]), "purge the cache"),
    ):
        _check(page, live_server, url, what, wait="#content")
