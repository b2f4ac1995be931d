"""Seed portal grants from grants minted at the Cloudflare sandbox (tests and benchmarks).

`POST /__sandbox__/grants` creates N grants with real tokens in one transaction; the portal side
gets the same tokens through `bulk_create`, so both sides agree on what is current, exactly as
after N consents.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.utils import timezone

from connections import crypto
from connections.models import Grant, OAuthApp

REQUIRED = ["user-details.read", "account-settings.read", "zone.read", "dns.read"]
OPTIONAL = ["dns.write", "cache.purge"]


def register_app(
    sandbox,
    *,
    name: str = "Engine test app",
    redirect_uri: str = "http://127.0.0.1:8000/oauth/cloudflare/callback/",
    optional: tuple[str, ...] = tuple(OPTIONAL),
) -> OAuthApp:
    """A fresh OAuth client at the sandbox (its own ground truth) and the matching portal app."""
    registered = sandbox.register_client(
        name=name,
        redirect_uris=[redirect_uri],
        scopes=["offline_access", *REQUIRED],
        optional_scopes=list(optional),
        visibility="public",
    )
    app = OAuthApp(
        name=name,
        client_id=registered["client_id"],
        redirect_uri=redirect_uri,
        required_scopes=REQUIRED,
        optional_scopes=list(optional),
    )
    app.set_client_secret(registered["client_secret"])
    app.save()
    return app


def mint_grants(
    sandbox,
    *,
    app: OAuthApp,
    client,
    count: int,
    user_email: str = "alice@example.com",
    scopes: list[str] | None = None,
    due_in: float | None = None,
) -> list[Grant]:
    """Mint `count` grants at the sandbox and store them as portal grants (same tokens).

    `due_in`: seconds until each grant's refresh is due (None: from the token lifetime).
    """
    scopes = scopes or ["offline_access", *REQUIRED]
    minted = []
    while len(minted) < count:
        chunk = min(count - len(minted), 5000)
        minted += sandbox.mint_grants(
            client_id=app.client_id, user_email=user_email, scopes=scopes, accounts="all", count=chunk
        )
    now = timezone.now()
    rows = []
    for item in minted:
        expires_at = now + timedelta(seconds=item["expires_in"])
        grant = Grant(
            client=client,
            app=app,
            # One portal grant per sandbox grant: the unique constraint is per Cloudflare user, so
            # the synthetic grants carry the sandbox grant id as their user id (email stays real).
            cf_user_id=item["grant_id"].replace("-", "")[:32],
            cf_user_email=user_email,
            requested_scopes=scopes,
            granted_scopes=item["scope"].split(),
            authorized_at=now,
            access_expires_at=expires_at,
            next_refresh_at=now + timedelta(seconds=due_in if due_in is not None else item["expires_in"] * 0.7),
            next_check_at=now + timedelta(hours=1),
        )
        grant.set_tokens(access_token=item["access_token"], refresh_token=item["refresh_token"] or "")
        grant.sandbox_grant_id = item["grant_id"]
        rows.append(grant)
    created = Grant.objects.bulk_create(rows, batch_size=1000)
    for grant, item in zip(created, minted, strict=True):
        grant.sandbox_grant_id = item["grant_id"]
    return created


def sandbox_ids(grants: list[Grant]) -> dict[int, str]:
    return {g.pk: g.sandbox_grant_id for g in grants}


def matches_ground_truth(grant: Grant, truth: dict) -> bool:
    """The portal holds the refresh token the sandbox considers current."""
    return bool(grant.refresh_token_fp) and grant.refresh_token_fp == truth["current_refresh_token_sha256"]


def unique_label() -> str:
    return secrets.token_hex(4)


__all__ = ["crypto", "matches_ground_truth", "mint_grants", "register_app", "sandbox_ids", "unique_label"]
