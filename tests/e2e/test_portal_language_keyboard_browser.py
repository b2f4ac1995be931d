"""The connect flow in French in a real browser, and connect / disconnect / reconnect with the keyboard
only (Tab, Enter, Space), with the focus visible on every control used. Cloudflare is the sandbox."""

from __future__ import annotations

import re

import pytest

from cloudflare_sandbox import seed
from connections.models import Grant
from tests import factories
from tests.e2e.accessibility import assert_accessible

pytestmark = [pytest.mark.browser, pytest.mark.sandbox, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-and-fresh-passphrase"


def _contact(*, language: str = "", client_language: str = ""):
    acme = factories.ClientFactory(name="Acme Corp", slug="acme", default_language=client_language)
    user = factories.UserFactory(username="jane@acme.example", email="jane@acme.example", password=PASSWORD)
    factories.ClientMemberFactory(client=acme, user=user, language=language)
    return acme, user


def _sandbox_consent(page, email: str = seed.ALICE_EMAIL) -> None:
    """Cloudflare's screens (the sandbox stands in for them): sign in if asked, then authorize."""
    page.wait_for_selector("#authorize, input[name=email]")
    if page.is_visible("input[name=email]"):
        page.fill("input[name=email]", email)
        page.fill("input[name=password]", seed.SANDBOX_PASSWORD)
        page.click("#login")
    page.wait_for_selector("#authorize")
    page.click("#authorize")


def test_a_french_contact_connects_in_french(live_server, production_cookies, cf_sandbox, cf_app, new_page):
    # The contact chose French; their client's default and their browser say English.
    acme, user = _contact(language="fr", client_language="en")
    page = new_page()
    page.set_extra_http_headers({"Accept-Language": "en-US,en;q=0.9"})
    page.goto(f"{live_server.url}/portal/login/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login")
    page.wait_for_url(f"{live_server.url}/portal/")
    assert page.get_attribute("html", "lang") == "fr"
    assert "Vous n'avez pas encore connecté Cloudflare" in page.inner_text("#empty-state")

    # The pre-consent page, its scope and action descriptions included.
    page.click("#connect")
    page.wait_for_selector("#continue-to-cloudflare")
    assert page.title().startswith("Avant de continuer vers Cloudflare")
    assert page.inner_text("h1") == "Connectez votre compte Cloudflare"
    assert "Lire et modifier les enregistrements DNS de vos zones" in page.inner_text("ul.scopes.optional")
    assert "En pratique, l'agence pourra" in page.inner_text("#consent-actions")
    assert page.inner_text("#continue-to-cloudflare") == "Continuer vers Cloudflare"
    assert_accessible(page, "pre-consent in French")
    page.click("#continue-to-cloudflare")
    _sandbox_consent(page)

    # The result: the outcome and the new connection, in French.
    page.wait_for_url(f"{live_server.url}/portal/")
    outcome = page.locator("#consent-outcome")
    assert outcome.get_attribute("data-result") == "connected"
    assert outcome.locator("h2").inner_text() == "Connecté"
    assert "Cloudflare a confirmé la connexion" in outcome.inner_text()
    card = page.locator("section.grant")
    assert "Ce que l'agence peut faire" in card.inner_text()
    assert card.locator("[data-role=status]").inner_text() == "Connecté"
    assert_accessible(page, "portal home after connecting, in French")
    assert Grant.objects.get(client=acme).status == Grant.Status.ACTIVE


def test_a_cancelled_consent_reads_in_the_browsers_french(
    live_server, production_cookies, cf_sandbox, cf_app, new_page
):
    """No choice by the contact nor by the client: the browser's French."""
    _acme, user = _contact()
    page = new_page()
    page.set_extra_http_headers({"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"})
    page.goto(f"{live_server.url}/portal/login/")
    assert page.inner_text("h1") == "Se connecter"
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login")
    page.click("#connect")
    page.click("#continue-to-cloudflare")
    page.wait_for_selector("#deny, input[name=email]")
    if page.is_visible("input[name=email]"):
        page.fill("input[name=email]", seed.BOB_EMAIL)
        page.fill("input[name=password]", seed.SANDBOX_PASSWORD)
        page.click("#login")
    page.click("#deny")
    page.wait_for_url(f"{live_server.url}/portal/")
    outcome = page.locator("#consent-outcome")
    assert outcome.get_attribute("data-result") == "cancelled"
    assert outcome.locator("h2").inner_text() == "Connexion annulée"
    assert outcome.get_attribute("role") == "status"


def _tab_to(page, selector: str, *, limit: int = 80) -> None:
    """Press Tab until `selector` has the focus (unless it has it already); it must show a visible focus
    indicator."""
    for attempt in range(limit):
        if attempt or not page.evaluate("(s) => document.activeElement.matches(s)", selector):
            page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement && document.activeElement.matches(s)", selector):
            ring = page.evaluate(
                "() => { const s = getComputedStyle(document.activeElement);"
                " return [s.outlineStyle, parseFloat(s.outlineWidth) || 0]; }"
            )
            assert ring[0] != "none" and ring[1] >= 2, f"{selector} has focus but no visible focus ring: {ring}"
            return
    raise AssertionError(f"{selector} cannot be reached with the Tab key on {page.url}")


def test_connect_disconnect_and_reconnect_with_the_keyboard_only(
    live_server, production_cookies, cf_sandbox, cf_app, new_page
):
    acme, user = _contact()
    page = new_page()
    page.goto(f"{live_server.url}/portal/login/")
    _tab_to(page, "input[name=username]")
    page.keyboard.type(user.username)
    _tab_to(page, "input[name=password]")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/portal/")

    # Connect.
    _tab_to(page, "#connect")
    page.keyboard.press("Enter")
    page.wait_for_selector("#continue-to-cloudflare")
    _tab_to(page, "#continue-to-cloudflare")
    page.keyboard.press("Enter")
    _sandbox_consent(page)
    page.wait_for_url(f"{live_server.url}/portal/")
    assert page.locator("#consent-outcome").get_attribute("data-result") == "connected"

    # Disconnect: Enter on the link, Space on the confirmation button.
    _tab_to(page, "a[data-action=disconnect]")
    page.keyboard.press("Enter")
    page.wait_for_selector("#confirm-disconnect")
    _tab_to(page, "#confirm-disconnect")
    page.keyboard.press("Space")
    page.wait_for_url(f"{live_server.url}/portal/")
    region = page.locator(".messages-region")
    assert region.get_attribute("role") == "status" and region.get_attribute("aria-live") == "polite"
    assert "The agency can no longer use this connection" in region.inner_text()
    assert Grant.objects.get(client=acme).status in (Grant.Status.DISCONNECTING, Grant.Status.DISCONNECTED)

    # Reconnect from the ended state.
    _tab_to(page, "#reconnect")
    page.keyboard.press("Enter")
    page.wait_for_selector("#continue-to-cloudflare")
    _tab_to(page, "#continue-to-cloudflare")
    page.keyboard.press("Enter")
    _sandbox_consent(page)
    page.wait_for_url(re.compile(re.escape(live_server.url) + r"/portal/$"))
    assert page.locator("#consent-outcome").get_attribute("data-result") == "connected"
    assert Grant.objects.filter(client=acme, status=Grant.Status.ACTIVE).count() == 1
