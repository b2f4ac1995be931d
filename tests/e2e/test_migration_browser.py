"""In a real browser: migration invite → the contact connects → parity → staff cut over."""

from __future__ import annotations

import re

import pytest
from django.core import mail

from apitokens import services
from apitokens.models import ApiToken
from cloudflare_sandbox import seed
from tests import factories
from tests.apitokens.conftest import ACME_COM, sandbox_token
from tests.clients.portal_flow import register_sandbox_app

from .test_portal_browser import PASSWORD, sign_in_to_sandbox

pytestmark = [pytest.mark.browser, pytest.mark.sandbox, pytest.mark.django_db(transaction=True)]


def test_a_contact_switches_from_an_api_token_and_staff_cut_over(live_server, production_cookies, cf_sandbox, new_page):
    register_sandbox_app(cf_sandbox, redirect_uri=f"{live_server.url}/oauth/cloudflare/callback/")
    acme = factories.ClientFactory(name="Acme Corp", slug="acme")
    contact = factories.UserFactory(username="jane@acme.example", email="jane@acme.example", password=PASSWORD)
    factories.ClientMemberFactory(client=acme, user=contact)
    staff = factories.SuperuserFactory(username="staff-anna", password=PASSWORD)
    token = sandbox_token(
        cf_sandbox,
        acme,
        name="Acme deploy",
        permissions=["API Tokens Read", "Zone Read", "DNS Read", "DNS Write"],
        zones=[ACME_COM],
    )

    # 1. The invitation: an email with the migration page's link.
    services.migration_invite(token=token, sent_by=staff)
    link = re.search(r"(http://\S+/portal/migration/\S+/)", mail.outbox[-1].body).group(1)

    # 2. The contact reads, in plain words, what the agency uses today and what changes.
    page = new_page()
    page.goto(link)
    page.fill("input[name=username]", contact.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login")
    page.wait_for_selector("#migration-connect")
    text = page.inner_text("#migration")
    assert "Acme deploy" in text and "Add DNS records to your zones" in text and "the old token is deleted" in text

    # 3. Connected at Cloudflare (the sandbox), back on the portal.
    page.click("#migration-connect")
    sign_in_to_sandbox(page, seed.ALICE_EMAIL)
    page.wait_for_selector("#authorize")
    page.click("#authorize")
    page.wait_for_url(f"{live_server.url}/portal/")
    assert page.get_attribute("#migration-notice", "data-state") == "parity"

    # 4. Parity: the page says so; staff cut over from the token's admin page.
    page.click("a.migration-link")
    page.wait_for_selector("#parity-ok")
    admin = new_page()
    admin.goto(f"{live_server.url}/admin/login/?next=/admin/apitokens/apitoken/{token.pk}/change/")
    admin.fill("input[name=username]", staff.username)
    admin.fill("input[name=password]", PASSWORD)
    admin.click("input[type=submit]")
    admin.wait_for_selector("#step-cutover")
    admin.click("#step-cutover")
    admin.wait_for_selector("#step-rollback")
    assert ApiToken.objects.get(pk=token.pk).state == "cut_over"

    page.reload()
    assert "Switched to your connection" in page.inner_text("#migration")
