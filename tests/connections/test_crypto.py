from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection

from connections import crypto
from connections.crypto import TokenDecryptionError
from connections.models import Grant, OAuthApp
from tests import factories


def _raw(table: str, column: str, pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def test_it_round_trips_a_secret():
    token = "cfort_" + "x" * 40
    ciphertext = crypto.encrypt(token)
    assert token not in ciphertext
    assert crypto.decrypt(ciphertext) == token


def test_it_raises_instead_of_returning_ciphertext_under_a_wrong_key(settings):
    ciphertext = crypto.encrypt("cfoat_secret-value")
    settings.TOKEN_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(TokenDecryptionError):
        crypto.decrypt(ciphertext)


def test_it_refuses_to_work_without_keys(settings):
    settings.TOKEN_ENCRYPTION_KEYS = []
    with pytest.raises(ImproperlyConfigured):
        crypto.encrypt("x")


def test_it_stores_tokens_encrypted_in_the_database(db):
    grant = factories.GrantFactory()
    stored = _raw("connections_grant", "refresh_token", grant.pk)
    assert stored and grant.refresh_token not in stored
    assert Grant.objects.get(pk=grant.pk).refresh_token == grant.refresh_token


def test_it_raises_when_loading_a_row_nobody_can_decrypt(db, settings):
    grant = factories.GrantFactory()
    settings.TOKEN_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(TokenDecryptionError):
        Grant.objects.get(pk=grant.pk)


def test_it_refuses_lookups_on_encrypted_columns(db):
    from django.core.exceptions import FieldError

    with pytest.raises(FieldError):
        list(Grant.objects.filter(refresh_token="cfort_x"))


def test_it_keeps_secrets_out_of_str_repr_and_serialisation(db):
    from django.core import serializers

    grant = factories.GrantFactory()
    for text in (str(grant), repr(grant), str(grant.app), serializers.serialize("json", [grant, grant.app])):
        assert grant.refresh_token not in text
        assert grant.access_token not in text
        assert grant.app.client_secret not in text


def test_rotation_leaves_every_row_readable_under_the_new_key_alone(db, settings):
    old_key = settings.TOKEN_ENCRYPTION_KEYS[0]
    grants = factories.GrantFactory.create_batch(7)
    app_secret = grants[0].app.client_secret
    expected = {g.pk: (g.access_token, g.refresh_token) for g in grants}

    new_key = Fernet.generate_key().decode()
    settings.TOKEN_ENCRYPTION_KEYS = [new_key, old_key]
    out = io.StringIO()
    call_command("rotate_token_keys", batch_size=3, stdout=out)
    assert "re-encrypted" in out.getvalue()
    assert "3/" in out.getvalue()  # progress per batch

    settings.TOKEN_ENCRYPTION_KEYS = [new_key]  # the old key is gone
    for grant in Grant.objects.all():
        assert (grant.access_token, grant.refresh_token) == expected[grant.pk]
    assert OAuthApp.objects.get(pk=grants[0].app.pk).client_secret == app_secret


def test_rotation_is_idempotent_and_reports_nothing_left(db, settings):
    factories.GrantFactory.create_batch(3)
    settings.TOKEN_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), settings.TOKEN_ENCRYPTION_KEYS[0]]
    call_command("rotate_token_keys", stdout=io.StringIO())
    before = _raw("connections_grant", "refresh_token", Grant.objects.first().pk)
    out = io.StringIO()
    call_command("rotate_token_keys", stdout=out)
    assert "Done: 0 value(s) re-encrypted" in out.getvalue()
    assert _raw("connections_grant", "refresh_token", Grant.objects.first().pk) == before


def test_rotation_dry_run_changes_nothing(db, settings):
    grant = factories.GrantFactory()
    before = _raw("connections_grant", "refresh_token", grant.pk)
    settings.TOKEN_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), settings.TOKEN_ENCRYPTION_KEYS[0]]
    out = io.StringIO()
    call_command("rotate_token_keys", dry_run=True, stdout=out)
    assert "would be re-encrypted" in out.getvalue()
    assert _raw("connections_grant", "refresh_token", grant.pk) == before


def test_rotation_stops_with_an_error_when_a_value_cannot_be_decrypted(db, settings):
    factories.GrantFactory()
    settings.TOKEN_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]  # old key dropped too early
    with pytest.raises(TokenDecryptionError):
        call_command("rotate_token_keys", stdout=io.StringIO())


def test_it_prints_a_usable_key():
    out = io.StringIO()
    call_command("generate_token_key", stdout=out)
    Fernet(out.getvalue().strip().encode())  # raises if not a valid key
