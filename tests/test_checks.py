"""Production misconfiguration fails at startup through system checks with IDs."""

from __future__ import annotations

import pytest

from agencyportal.checks import check_settings

pytestmark = [
    pytest.mark.filterwarnings("ignore:Overriding setting DATABASES"),
    pytest.mark.filterwarnings("ignore:Overriding setting CACHES"),
]

PRODUCTION = {
    "DEBUG": False,
    "SECRET_KEY": "a-long-random-production-secret-key-for-tests-0123456789",
    "SITE_URL": "https://portal.agency.example",
    "CLOUDFLARE_AUTHORIZE_URL": "https://dash.cloudflare.com/oauth2/auth",
    "CLOUDFLARE_TOKEN_URL": "https://dash.cloudflare.com/oauth2/token",
    "CLOUDFLARE_REVOKE_URL": "https://dash.cloudflare.com/oauth2/revoke",
    "CLOUDFLARE_API_BASE_URL": "https://api.cloudflare.com/client/v4",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "DATABASES": {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "portal"}},
    "CACHES": {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://r:6379/1"}},
    "STAFF_OTP_REQUIRED": True,
}


def _ids(settings, **overrides) -> set[str]:
    for key, value in {**PRODUCTION, **overrides}.items():
        setattr(settings, key, value)
    return {message.id for message in check_settings()}


def test_it_passes_a_complete_production_configuration(settings):
    assert _ids(settings) == set()


def test_it_fails_without_encryption_keys(settings):
    assert "agencyportal.E001" in _ids(settings, TOKEN_ENCRYPTION_KEYS=[])


def test_it_fails_on_a_malformed_encryption_key(settings):
    assert "agencyportal.E002" in _ids(settings, TOKEN_ENCRYPTION_KEYS=["not-a-key"])


def test_it_fails_when_the_encryption_key_is_the_secret_key(settings):
    key = settings.TOKEN_ENCRYPTION_KEYS[0]
    assert "agencyportal.E003" in _ids(settings, SECRET_KEY=key)


def test_it_fails_on_debug_with_the_real_cloudflare(settings):
    assert "agencyportal.E004" in _ids(settings, DEBUG=True)


def test_it_fails_on_plain_http_cloudflare_urls_in_production(settings):
    assert "agencyportal.E006" in _ids(settings, CLOUDFLARE_TOKEN_URL="http://127.0.0.1:8788/oauth2/token")


def test_it_fails_on_a_plain_http_site_url_in_production(settings):
    assert "agencyportal.E007" in _ids(settings, SITE_URL="http://portal.example")


def test_it_warns_about_development_backends_in_production(settings):
    ids = _ids(
        settings,
        CELERY_BROKER_URL="filesystem://",
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "x"}},
        ALERT_WEBHOOK_URL="https://hooks.example/x",
        ALERT_WEBHOOK_SECRET="",
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        STAFF_OTP_REQUIRED=False,
    )
    assert {
        "agencyportal.W001",
        "agencyportal.W002",
        "agencyportal.W003",
        "agencyportal.W004",
        "agencyportal.W005",
    } <= ids


def test_it_accepts_the_development_defaults(settings):
    # DEBUG with the sandbox over http is the development set-up: nothing to report.
    assert (
        _ids(
            settings,
            DEBUG=True,
            SITE_URL="http://127.0.0.1:8000",
            CLOUDFLARE_AUTHORIZE_URL="http://127.0.0.1:8788/oauth2/auth",
            CLOUDFLARE_TOKEN_URL="http://127.0.0.1:8788/oauth2/token",
            CLOUDFLARE_REVOKE_URL="http://127.0.0.1:8788/oauth2/revoke",
            CLOUDFLARE_API_BASE_URL="http://127.0.0.1:8788/client/v4",
        )
        == set()
    )
