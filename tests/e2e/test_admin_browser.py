"""Staff in a real browser: sign in with an authenticator code, open the fleet dashboard and a grant
page, and see no console error and no Content-Security-Policy violation."""

from __future__ import annotations

import pytest
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from tests import factories

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _code(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):0{device.digits}d}"


def test_staff_open_the_dashboard_and_a_grant_page_without_console_errors(live_server, new_page, settings):
    settings.STAFF_OTP_REQUIRED = True
    staff = factories.SuperuserFactory(username="ops", password="correct-horse-battery")
    device = TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)
    grant = factories.GrantFactory(cf_user_email="owner@acme.example")
    account = factories.CloudflareAccountFactory(client=grant.client, name="Acme Corp")
    factories.ZoneFactory(account=account, name="acme.com")
    grant.accounts.add(account)
    factories.GrantEventFactory(grant=grant)

    page = new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type in ("error", "warning") else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)

    page.goto(f"{live_server.url}/admin/")
    page.fill("input[name=username]", "ops")
    page.fill("input[name=password]", "correct-horse-battery")
    page.fill("input[name=otp_token]", _code(device))
    page.click("input[type=submit]")
    page.wait_for_selector("#fleet-dashboard")
    assert page.locator(".fleet-tile").count() >= 9
    assert page.locator("svg.fleet-chart").count() == 2

    page.goto(f"{live_server.url}/admin/connections/grant/{grant.pk}/change/")
    page.wait_for_selector("text=owner@acme.example")
    assert page.locator("text=acme.com").count() >= 1
    assert page.locator("text=Event timeline").count() >= 1

    page.goto(f"{live_server.url}/admin/connections/grant/")
    page.wait_for_selector("#result_list")

    csp = [p for p in problems if "Content Security Policy" in p or "Content-Security-Policy" in p]
    assert not csp, csp
    assert not problems, problems


def test_a_new_staff_member_enrolls_an_authenticator_in_the_browser(live_server, new_page, settings):
    settings.STAFF_OTP_REQUIRED = True
    factories.StaffFactory(username="newbie", password="correct-horse-battery", is_superuser=True)
    page = new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)

    page.goto(f"{live_server.url}/admin/")
    page.fill("input[name=username]", "newbie")
    page.fill("input[name=password]", "correct-horse-battery")
    page.click("input[type=submit]")
    page.wait_for_selector(".otp-qr svg")
    device = TOTPDevice.objects.get(user__username="newbie")
    page.fill("input[name=otp_token]", _code(device))
    page.click("input[type=submit]")
    page.wait_for_selector("#fleet-dashboard")
    assert not problems, problems
