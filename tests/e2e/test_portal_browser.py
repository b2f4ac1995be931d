"""End to end, in a real browser: invite → password → sign in → pre-consent → Cloudflare (the
sandbox) → back on the portal → disconnect → the sandbox's ground truth shows the grant revoked."""

from __future__ import annotations

import re

import pytest
from django.core import mail

from clients.models import ClientMember
from cloudflare_sandbox import seed
from connections.models import Grant, GrantEvent
from tests import factories

pytestmark = [pytest.mark.browser, pytest.mark.sandbox, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-and-fresh-passphrase"


def staff_with_authenticator(settings):
    from django_otp.oath import TOTP
    from django_otp.plugins.otp_totp.models import TOTPDevice

    settings.STAFF_OTP_REQUIRED = True
    staff = factories.SuperuserFactory(username="staff-anna", password=PASSWORD)
    device = TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)

    def code() -> str:
        totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
        return f"{totp.token():0{device.digits}d}"

    return staff, code


def sign_in_to_sandbox(page, email: str):
    page.wait_for_selector("input[name=email]")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", seed.SANDBOX_PASSWORD)
    page.click("#login")


def test_a_contact_connects_one_account_declines_a_scope_and_disconnects(
    live_server, production_cookies, cf_sandbox, cf_app, new_page
):
    acme = factories.ClientFactory(name="Acme Corp", slug="acme")
    staff, otp_code = staff_with_authenticator(production_cookies)

    # 1. Staff invite a contact from the admin (MFA sign-in, then the action's form).
    admin_page = new_page()
    admin_page.goto(f"{live_server.url}/admin/login/?next=/admin/clients/client/")
    admin_page.fill("input[name=username]", staff.username)
    admin_page.fill("input[name=password]", PASSWORD)
    admin_page.fill("input[name=otp_token]", otp_code())
    admin_page.click("input[type=submit]")
    admin_page.wait_for_url(re.compile(r".*/admin/clients/client/$"))
    admin_page.check(f"input[name=_selected_action][value='{acme.pk}']")
    admin_page.select_option("select[name=action]", "invite_contact")
    admin_page.click("button[name=index]")
    admin_page.fill("input[name=email]", "jane@acme.example")
    admin_page.click("input[value='Send invitation']")
    admin_page.wait_for_selector("text=Invited jane@acme.example")
    (message,) = mail.outbox
    link = re.search(r"(http://\S+/portal/invite/\S+/)", message.body).group(1)
    assert link.startswith(live_server.url)

    # 2. The contact sets a password, then signs in again with it.
    page = new_page()
    page.goto(link)
    page.wait_for_url(re.compile(r".*/portal/welcome/set-password/$"))
    page.fill("input[name=new_password1]", PASSWORD)
    page.fill("input[name=new_password2]", PASSWORD)
    page.click("#set-password")
    page.wait_for_url(f"{live_server.url}/portal/")
    page.click("#logout")
    page.wait_for_url(re.compile(r".*/portal/login/$"))
    page.fill("input[name=username]", "jane@acme.example")
    page.fill("input[name=password]", PASSWORD)
    page.click("#login")
    page.wait_for_url(f"{live_server.url}/portal/")
    assert page.is_visible("#empty-state")
    session_cookie = next(c for c in page.context.cookies() if c["name"] == "sessionid")
    assert session_cookie["sameSite"] == "Lax" and session_cookie["httpOnly"]

    # 3. Pre-consent: plain words, app name and publisher domain, one button.
    page.click("#connect")
    page.wait_for_selector("#continue-to-cloudflare")
    assert page.inner_text("#app-name") == cf_app.name
    assert page.inner_text("#publisher-domain") == "agency.example"
    assert "Read and change DNS records in your zones" in page.inner_text("ul.scopes.optional")
    page.click("#continue-to-cloudflare")

    # 4. Cloudflare (the sandbox): sign in as alice, pick one of her two accounts, decline one optional scope.
    sign_in_to_sandbox(page, seed.ALICE_EMAIL)
    page.wait_for_selector("#authorize")
    page.check("input[name=account_mode][value=specific]")
    page.check(f"input[name=account][value='{seed.account_id(seed.ACME_CORP)}']")
    page.uncheck("input[name=optional_scope][value='analytics.read']")
    page.click("#authorize")

    # 5. Back on the portal, on a clean URL, with the grant as authorized.
    page.wait_for_url(f"{live_server.url}/portal/")
    card = page.locator("section.grant")
    assert card.count() == 1
    text = card.inner_text()
    assert seed.ALICE_EMAIL in text
    assert seed.ACME_CORP in text and seed.ACME_STAGING not in text
    for zone in ("acme.com", "acme.net", "acme.io"):
        assert zone in text
    assert "Read and change DNS records in your zones" in card.locator("ul.scopes.granted").inner_text()
    assert "See traffic analytics for your zones" in card.locator("ul.scopes.declined").inner_text()
    assert "jane@acme.example" in text
    assert page.is_visible("#consent-outcome[data-result=partial]")
    grant = Grant.objects.get(client=acme)
    assert grant.authorized_by == ClientMember.objects.get(client=acme).user
    (truth,) = cf_sandbox.state(client_id=cf_app.client_id)["grants"]
    assert truth["status"] == "active" and truth["accounts"] == [seed.account_id(seed.ACME_CORP)]

    # 6. Disconnect, with a confirmation page.
    page.click("a[data-action=disconnect]")
    page.wait_for_selector("#confirm-disconnect")
    page.click("#confirm-disconnect")
    page.wait_for_url(f"{live_server.url}/portal/")
    assert "The agency can no longer use this connection" in page.inner_text("ul.messages")

    # 7. Cloudflare's ground truth: revoked. The portal erased the tokens.
    (truth,) = cf_sandbox.state(client_id=cf_app.client_id)["grants"]
    assert truth["status"] == "revoked"
    grant.refresh_from_db()
    assert grant.status == Grant.Status.DISCONNECTED and grant.refresh_token_fp == ""
    assert "Earlier connections" in page.content() or "Disconnected" in page.content()


def test_deny_on_the_consent_screen_shows_cancelled_and_records_it(
    live_server, production_cookies, cf_sandbox, cf_app, new_page
):
    acme = factories.ClientFactory(name="Acme Corp", slug="acme")
    contact = factories.UserFactory(username="jane@acme.example", password=PASSWORD)
    factories.ClientMemberFactory(client=acme, user=contact)

    page = new_page()
    page.goto(f"{live_server.url}/portal/")
    page.wait_for_url(re.compile(r".*/portal/login/\?next=/portal/$"))
    page.fill("input[name=username]", contact.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login")
    page.wait_for_url(f"{live_server.url}/portal/")
    page.click("#connect")
    page.click("#continue-to-cloudflare")
    sign_in_to_sandbox(page, seed.BOB_EMAIL)
    page.wait_for_selector("#deny")
    page.click("#deny")

    page.wait_for_url(f"{live_server.url}/portal/")
    outcome = page.locator("#consent-outcome")
    assert outcome.get_attribute("data-result") == "cancelled"
    assert "Connection cancelled" in outcome.inner_text()
    event = GrantEvent.objects.get(kind=GrantEvent.Kind.CONSENT_CANCELLED)
    assert event.client == acme and event.actor == contact
    assert not Grant.objects.exists()
    assert cf_sandbox.calls().get("token", 0) == 0
