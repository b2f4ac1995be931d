"""A text field whose value is encrypted at rest (see connections/crypto.py)."""

from __future__ import annotations

from typing import Any

from django.db import models

from . import crypto


class EncryptedTextField(models.TextField):
    """Stores Fernet ciphertext; Python code only ever sees the plaintext.

    An empty string stays empty (it means "no secret"), so "no refresh token" needs no ciphertext.
    Lookups other than `isnull` are refused: ciphertext is randomised, so equality on it is
    meaningless and would silently match nothing. Compare fingerprints instead.
    """

    description = "Text encrypted at rest with TOKEN_ENCRYPTION_KEYS"

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> str | None:
        if value is None or value == "":
            return value
        return crypto.decrypt(value)

    def get_prep_value(self, value: Any) -> str | None:
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return crypto.encrypt(value)

    def get_lookup(self, lookup_name: str):
        if lookup_name != "isnull":
            return None
        return super().get_lookup(lookup_name)

    def value_from_object(self, obj: models.Model) -> str:
        # Serialisation (dumpdata, fixtures) and model forms never carry a secret: they read
        # fields through this method. Code that needs the secret reads the attribute itself.
        return ""

    def value_to_string(self, obj: models.Model) -> str:
        return ""
