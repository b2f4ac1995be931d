"""Browser tests: a real headless Chromium (Playwright) against the live portal and the sandbox.

Playwright's sync API runs an event loop in this thread; Django refuses ORM calls from a thread
with a running loop unless told that this is deliberate (the test thread only reads the database
between browser steps).
"""

from __future__ import annotations

import os
import shutil

import pytest

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
# The portal on 127.0.0.1 like the sandbox (pytest-django's default host is localhost).
os.environ.setdefault("DJANGO_LIVE_TEST_SERVER_ADDRESS", "127.0.0.1")

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def chromium():
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def new_page(chromium):
    """A factory of isolated browser contexts (one per person): `page = new_page()`."""
    contexts = []

    def make():
        context = chromium.new_context()
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def production_cookies(settings, live_server):
    """Cookie and security settings as in production; Secure is off only because this is http://."""
    settings.DEBUG = False
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    settings.SESSION_COOKIE_SAMESITE = "Lax"
    settings.CSRF_COOKIE_SAMESITE = "Lax"
    settings.SESSION_COOKIE_HTTPONLY = True
    settings.SECURE_SSL_REDIRECT = False
    settings.SITE_URL = live_server.url
    # The revocation task runs right after the disconnect commits, inside the live server.
    settings.CELERY_TASK_ALWAYS_EAGER = True
    return settings


@pytest.fixture
def cf_app(cf_sandbox, live_server):
    """An OAuth client registered at the sandbox whose callback is the browser tests' live server."""
    from tests.clients.portal_flow import register_sandbox_app

    app = register_sandbox_app(cf_sandbox, redirect_uri=f"{live_server.url}/oauth/cloudflare/callback/")
    yield app
    cf_sandbox.reset_settings()
