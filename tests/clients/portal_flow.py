"""Shared helpers for portal and consent tests: a sandbox OAuth app, and the consent round trip
driven over HTTP (the Django test client for the portal, the sandbox's own helper for the
Cloudflare side)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from cloudflare_sandbox.testing import run_authorization
from connections.models import OAuthApp

REQUIRED = ["user-details.read", "account-settings.read", "zone.read", "dns.read"]
OPTIONAL = ["dns.write", "cache.purge", "zone-settings.read", "analytics.read"]
TEST_CALLBACK = "http://testserver/oauth/cloudflare/callback/"


def register_sandbox_app(
    sandbox, *, redirect_uri: str = TEST_CALLBACK, name: str = "Example Agency Portal"
) -> OAuthApp:
    """Register an OAuth client at the sandbox and the matching OAuthApp (the default one)."""
    reg = sandbox.register_client(
        name=name,
        redirect_uris=[redirect_uri],
        scopes=["offline_access", *REQUIRED],
        optional_scopes=OPTIONAL,
        publisher_domain="agency.example",
        token_endpoint_auth_method="client_secret_basic",
    )
    OAuthApp.objects.filter(is_default=True).update(is_default=False)
    app = OAuthApp(
        name=name,
        client_id=reg["client_id"],
        redirect_uri=redirect_uri,
        required_scopes=list(REQUIRED),
        optional_scopes=list(OPTIONAL),
        publisher_domain="agency.example",
        is_default=True,
    )
    app.set_client_secret(reg["client_secret"])
    app.save()
    return app


def start_consent(client, path: str = "/oauth/connect/") -> str:
    """POST the pre-consent form; returns the Cloudflare authorize URL the portal redirects to."""
    response = client.post(path)
    assert response.status_code == 303, response.status_code
    return response["Location"]


def authorize_at_sandbox(url: str, **kwargs) -> str:
    """Play the Cloudflare user; returns the callback URL the sandbox redirects back to."""
    result = run_authorization(url, **kwargs)
    assert result.location, f"sandbox stopped at {result.status}: {result.response.text[:300]}"
    return result.location


def callback_path(location: str) -> str:
    parts = urlsplit(location)
    return f"{parts.path}?{parts.query}"


def callback_params(location: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(location).query))


def connect_through_sandbox(client, **kwargs):
    """Full round trip: pre-consent POST, sandbox consent, callback GET. Returns the callback response."""
    location = authorize_at_sandbox(start_consent(client), **kwargs)
    return client.get(callback_path(location))
