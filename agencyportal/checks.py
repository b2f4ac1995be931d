"""System checks: production misconfiguration fails at startup, not at first use."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

REAL_CLOUDFLARE_HOSTS = ("dash.cloudflare.com", "api.cloudflare.com")


def _uses_real_cloudflare() -> bool:
    urls = (
        settings.CLOUDFLARE_AUTHORIZE_URL,
        settings.CLOUDFLARE_TOKEN_URL,
        settings.CLOUDFLARE_REVOKE_URL,
        settings.CLOUDFLARE_API_BASE_URL,
    )
    return any(host in url for url in urls for host in REAL_CLOUDFLARE_HOSTS)


@register(Tags.security)
def check_settings(app_configs=None, **kwargs) -> list:
    from cryptography.fernet import Fernet

    errors: list = []
    keys = settings.TOKEN_ENCRYPTION_KEYS
    if not keys:
        errors.append(
            Error(
                "TOKEN_ENCRYPTION_KEYS is not set: tokens and client secrets cannot be stored.",
                hint="Generate a key with `python manage.py generate_token_key` and set TOKEN_ENCRYPTION_KEYS.",
                id="agencyportal.E001",
            )
        )
    for key in keys:
        try:
            Fernet(key.strip().encode())
        except ValueError:
            errors.append(
                Error(
                    "TOKEN_ENCRYPTION_KEYS contains a value that is not a Fernet key.",
                    hint="Each key is 32 url-safe base64-encoded bytes (`manage.py generate_token_key`).",
                    id="agencyportal.E002",
                )
            )
            break
    if keys and settings.SECRET_KEY in keys:
        errors.append(Error("TOKEN_ENCRYPTION_KEYS must not reuse SECRET_KEY.", id="agencyportal.E003"))
    if settings.DEBUG and _uses_real_cloudflare():
        errors.append(
            Error(
                "DEBUG is on while the portal talks to the real Cloudflare.",
                hint="Debug pages can show request data of real clients: set DEBUG=False in production.",
                id="agencyportal.E004",
            )
        )
    urls = {
        "CLOUDFLARE_AUTHORIZE_URL": settings.CLOUDFLARE_AUTHORIZE_URL,
        "CLOUDFLARE_TOKEN_URL": settings.CLOUDFLARE_TOKEN_URL,
        "CLOUDFLARE_REVOKE_URL": settings.CLOUDFLARE_REVOKE_URL,
        "CLOUDFLARE_API_BASE_URL": settings.CLOUDFLARE_API_BASE_URL,
    }
    if not settings.DEBUG:
        for name, url in urls.items():
            if not url.startswith("https://"):
                errors.append(
                    Error(
                        f"{name} is not an https:// URL ({url}).",
                        hint="Tokens would cross the network in clear text. Use the sandbox only with DEBUG=True.",
                        id="agencyportal.E006",
                    )
                )
        if not settings.SITE_URL.startswith("https://"):
            errors.append(
                Error(
                    "SITE_URL is not an https:// URL.",
                    hint="The OAuth callback and the portal must be served over HTTPS in production.",
                    id="agencyportal.E007",
                )
            )
        if settings.CELERY_BROKER_URL.startswith("filesystem://"):
            errors.append(
                Warning(
                    "CELERY_BROKER_URL uses the filesystem broker.",
                    hint="It works for one machine in development only; use redis:// in production.",
                    id="agencyportal.W001",
                )
            )
        if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
            errors.append(
                Warning(
                    "The database is SQLite.",
                    hint="Use PostgreSQL (DATABASE_URL=postgres://...) in production: row locks need it.",
                    id="agencyportal.W002",
                )
            )
        if "LocMemCache" in settings.CACHES["default"]["BACKEND"]:
            errors.append(
                Warning(
                    "The cache is per process (local memory).",
                    hint="Login throttling counts per web process: set CACHE_URL=redis://... in production.",
                    id="agencyportal.W004",
                )
            )
        if not settings.STAFF_OTP_REQUIRED:
            errors.append(
                Warning(
                    "STAFF_OTP_REQUIRED is off: staff reach the admin with a password alone.",
                    id="agencyportal.W005",
                )
            )
        if settings.ALERT_WEBHOOK_URL and not settings.ALERT_WEBHOOK_SECRET:
            errors.append(
                Warning(
                    "ALERT_WEBHOOK_URL is set without ALERT_WEBHOOK_SECRET: webhooks would be unsigned.",
                    id="agencyportal.W003",
                )
            )
    return errors
