"""Portal pages never load a token or the app's secret: nothing is decrypted in a web request."""

from __future__ import annotations

import pytest
from django.urls import reverse

from connections import crypto
from tests import factories


@pytest.fixture
def no_decryption(monkeypatch):
    def refuse(ciphertext: str) -> str:
        raise AssertionError("a secret was decrypted while rendering a portal page")

    monkeypatch.setattr(crypto, "decrypt", refuse)


def test_the_portal_pages_render_without_decrypting_anything(client, client_owner, acme, no_decryption):
    grant = factories.GrantFactory(client=acme)
    account = factories.CloudflareAccountFactory(client=acme)
    factories.ZoneFactory(account=account)
    grant.accounts.add(account)
    client.force_login(client_owner)
    for url in (reverse("clients:home"), reverse("connections:disconnect", args=[grant.code]), reverse("clients:help")):
        response = client.get(url)
        assert response.status_code == 200, url
        assert grant.refresh_token not in response.content.decode()
