"""Shared fixtures: personas, encryption keys, and backend markers.

Personas: `agency_admin` (superuser staff), `client_owner` (a portal user of `acme`),
`other_client_owner` (a portal user of another client).
"""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.conf import settings as django_settings

from tests import factories

TEST_KEYS = [Fernet.generate_key().decode()]


@pytest.fixture(autouse=True)
def _test_settings(settings):
    """Every test runs with dedicated encryption keys (never the dev key file) and a fast hasher."""
    settings.TOKEN_ENCRYPTION_KEYS = list(TEST_KEYS)
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.FLEET_COUNT_FLUSH_SECONDS = 0  # the dashboard's counters written at once (batching: its own test)
    # Login throttling and staff MFA have their own tests (tests/test_staff_security.py), which
    # switch them on; elsewhere they would only get in the way of logging personas in.
    settings.AXES_ENABLED = False
    settings.STAFF_OTP_REQUIRED = False
    # Consent-start limits have their own tests (tests/connections/test_consent_limits.py); counters live
    # in the cache across tests, where ids repeat, so everywhere else the limits are out of reach.
    settings.CONSENT_START_LIMIT_PER_CONTACT = 10**6
    settings.CONSENT_START_LIMIT_PER_CLIENT = 10**6


def pytest_sessionstart(session):
    """Compile the message catalogues (.po -> .mo, not committed) so `pytest` alone has the translations."""
    from django.core.management import call_command

    call_command("compilemessages", ignore_patterns=[".venv", "var"], verbosity=0)


def _db_vendor() -> str:
    engine = django_settings.DATABASES["default"]["ENGINE"]
    return "postgresql" if "postgresql" in engine else "sqlite"


def pytest_collection_modifyitems(config, items):
    skip_pg = pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL=postgres://...")
    skip_redis = pytest.mark.skip(reason="needs Redis: set CELERY_BROKER_URL=redis://...")
    on_pg = _db_vendor() == "postgresql"
    on_redis = django_settings.CELERY_BROKER_URL.startswith("redis://")
    for item in items:
        if "postgres" in item.keywords and not on_pg:
            item.add_marker(skip_pg)
        if "redis" in item.keywords and not on_redis:
            item.add_marker(skip_redis)


@pytest.fixture
def agency_admin(db):
    return factories.SuperuserFactory(username="agency-admin")


@pytest.fixture
def acme(db):
    return factories.ClientFactory(name="Acme Corp", slug="acme")


@pytest.fixture
def client_owner(acme):
    return factories.ClientMemberFactory(client=acme, user=factories.UserFactory(username="owner@acme.example")).user


@pytest.fixture
def other_client_owner(db):
    other = factories.ClientFactory(name="Globex", slug="globex")
    return factories.ClientMemberFactory(client=other, user=factories.UserFactory(username="owner@globex.example")).user


@pytest.fixture
def oauth_app(db):
    return factories.OAuthAppFactory(is_default=True)


@pytest.fixture
def owner_client(client, client_owner):
    """The Django test client, signed in to the portal as `client_owner`."""
    client.force_login(client_owner)
    return client


@pytest.fixture
def admin_client(client, agency_admin):
    client.force_login(agency_admin)
    return client


# --- The Cloudflare sandbox, as a real separate process -----------------------------------------


@pytest.fixture(scope="session")
def cf_sandbox_process(tmp_path_factory):
    """One sandbox process for the whole run (control endpoint on, quiet)."""
    from cloudflare_sandbox.testing import SandboxProcess

    with SandboxProcess(db_path=tmp_path_factory.mktemp("cf-sandbox") / "sandbox.sqlite3") as proc:
        yield proc


@pytest.fixture
def cf_sandbox(cf_sandbox_process, settings):
    """The running sandbox with faults, settings and counters reset, and the portal pointed at it."""
    _sandbox_clean(cf_sandbox_process)
    base = cf_sandbox_process.base_url
    settings.CLOUDFLARE_AUTHORIZE_URL = f"{base}/oauth2/auth"
    settings.CLOUDFLARE_TOKEN_URL = f"{base}/oauth2/token"
    settings.CLOUDFLARE_REVOKE_URL = f"{base}/oauth2/revoke"
    settings.CLOUDFLARE_API_BASE_URL = f"{base}/client/v4"
    settings.CLOUDFLARE_ISSUER = cf_sandbox_process.issuer
    yield cf_sandbox_process
    _sandbox_clean(cf_sandbox_process)


@pytest.fixture
def cf_app(cf_sandbox):
    """An OAuth client registered at the sandbox and the matching default OAuthApp (test server callback)."""
    from tests.clients.portal_flow import register_sandbox_app

    app = register_sandbox_app(cf_sandbox)
    yield app
    cf_sandbox.reset_settings()


def _sandbox_clean(process) -> None:
    """Faults off, default settings, zero counters, the real clock."""
    process.clear_faults()
    process.reset_settings()
    process.reset_counters()
    process.set_clock(0)
