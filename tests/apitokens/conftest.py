"""Clients on pasted API tokens, at the Cloudflare sandbox (real tokens, real HTTP)."""

from __future__ import annotations

import pytest

from apitokens import services
from apitokens.models import ApiToken
from cloudflare_sandbox.seed import zone_id

ACME_COM = zone_id("acme.com")
ACME_NET = zone_id("acme.net")


def sandbox_token(sandbox, client, *, name="agency tools", purpose="customer", account_id=None, declared=(), **spec):
    """Issue a token at the sandbox and record it for `client` in the portal, verified."""
    issued = (
        sandbox.create_account_token(account_id, name=name, **spec)
        if account_id
        else sandbox.create_api_token(name=name, **spec)
    )
    token = services.api_token_create(
        client=client,
        name=name,
        token=issued["token"],
        purpose=purpose,
        owner_account_id=account_id or "",
        permissions=list(declared),
        created_by=None,
    )
    services.api_token_verify(token_id=token.pk)
    token = ApiToken.objects.get(pk=token.pk)
    token.issued = issued  # the sandbox's answer (with the secret), for the test only
    return token


@pytest.fixture
def staff_user(agency_admin):
    return agency_admin
