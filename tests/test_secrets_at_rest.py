"""Secrets at rest: after a real connect-refresh cycle against the sandbox, no table holds a token in
clear text; key rotation never overwrites a token a worker rotated meanwhile."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from connections import crypto, ratelimit
from connections.models import Grant
from connections.services.refresh import Outcome, grant_refresh
from tests.sandbox_grants import mint_grants, register_app


def _every_text_value() -> list[str]:
    """Every value of every column of every table, as the database holds it (a dump, in effect)."""
    values: list[str] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                values.extend(str(v) for v in row if v is not None)
    return values


@pytest.mark.sandbox
def test_no_table_holds_a_token_or_secret_in_clear_text(cf_sandbox, acme):
    ratelimit.reset()
    app = register_app(cf_sandbox)
    grants = mint_grants(cf_sandbox, app=app, client=acme, count=3)
    for grant in grants:
        assert grant_refresh(grant_id=grant.pk, force=True) == Outcome.REFRESHED
    live = list(Grant.objects.all())
    secrets = {app.client_secret} | {g.access_token for g in live} | {g.refresh_token for g in live}
    dump = "\n".join(_every_text_value())
    assert "cfoat_" not in dump and "cfort_" not in dump
    for secret in secrets:
        assert secret and secret not in dump


def test_rotation_leaves_alone_a_token_rotated_by_a_worker_meanwhile(db, settings, monkeypatch):
    from tests import factories

    grant = factories.GrantFactory()
    old_key = settings.TOKEN_ENCRYPTION_KEYS[0]
    settings.TOKEN_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), old_key]
    fresh = "cfort_" + "n" * 40
    real_decrypt = crypto.decrypt
    raced = []

    def decrypt_then_race(ciphertext: str) -> str:
        plaintext = real_decrypt(ciphertext)
        if plaintext == grant.refresh_token and not raced:
            raced.append(True)
            # A worker stores a rotated refresh token between the command's read and its write.
            g = Grant.objects.get(pk=grant.pk)
            g.set_tokens(access_token=g.access_token, refresh_token=fresh)
            g.save(update_fields=["access_token", "refresh_token", "access_token_fp", "refresh_token_fp"])
        return plaintext

    monkeypatch.setattr(crypto, "decrypt", decrypt_then_race)
    call_command("rotate_token_keys", stdout=io.StringIO())
    settings.TOKEN_ENCRYPTION_KEYS = [settings.TOKEN_ENCRYPTION_KEYS[0]]  # old key gone
    stored = Grant.objects.get(pk=grant.pk)
    assert raced
    assert stored.refresh_token == fresh  # the worker's write survived; nothing stale came back
