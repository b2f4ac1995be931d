"""Encryption at rest for OAuth tokens and client secrets.

A small wrapper on `cryptography`'s MultiFernet with its own key list, `TOKEN_ENCRYPTION_KEYS`:
the first key encrypts, every key decrypts, so keys rotate without downtime (add a new key first,
run `manage.py rotate_token_keys`, then drop the old key). Keys are never derived from SECRET_KEY.

A value that no key can decrypt raises `TokenDecryptionError`. It never comes back as ciphertext
or as an empty string: sending garbage to Cloudflare would look like a dead refresh token and
every grant would be marked revoked.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class TokenDecryptionError(Exception):
    """A stored secret could not be decrypted with any key in TOKEN_ENCRYPTION_KEYS."""


@lru_cache(maxsize=8)
def _fernets(keys: tuple[str, ...]) -> tuple[MultiFernet, Fernet]:
    if not keys:
        raise ImproperlyConfigured("TOKEN_ENCRYPTION_KEYS is empty: set at least one Fernet key.")
    try:
        fernets = [Fernet(key.strip().encode()) for key in keys]
    except ValueError as exc:
        raise ImproperlyConfigured(
            "TOKEN_ENCRYPTION_KEYS holds a value that is not a Fernet key "
            "(32 url-safe base64-encoded bytes; generate one with `manage.py generate_token_key`)."
        ) from exc
    return MultiFernet(fernets), fernets[0]


def _keys() -> tuple[str, ...]:
    return tuple(settings.TOKEN_ENCRYPTION_KEYS)


def encrypt(plaintext: str) -> str:
    multi, _ = _fernets(_keys())
    return multi.encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    multi, _ = _fernets(_keys())
    try:
        return multi.decrypt(ciphertext.encode()).decode()
    except (InvalidToken, ValueError) as exc:
        raise TokenDecryptionError(
            "A stored secret could not be decrypted with any key in TOKEN_ENCRYPTION_KEYS "
            "(was a key removed before `manage.py rotate_token_keys` finished?)."
        ) from exc


def is_current(ciphertext: str) -> bool:
    """True when the value is already encrypted under the newest (first) key."""
    _, primary = _fernets(_keys())
    try:
        primary.decrypt(ciphertext.encode())
    except (InvalidToken, ValueError):
        return False
    return True


def generate_key() -> str:
    return Fernet.generate_key().decode()


def fingerprint(secret: str) -> str:
    """A stable, non-reversible identifier of a secret (SHA-256 hex), safe to store and show.

    The tokens are long random strings, so their hash reveals nothing usable; the fingerprint lets
    staff and tests tell tokens apart without ever decrypting them.
    """
    return hashlib.sha256(secret.encode()).hexdigest() if secret else ""


def mask(prefix_source: str, fp: str) -> str:
    """How a secret is shown anywhere in the UI: its type prefix and a fingerprint fragment."""
    if not fp:
        return "—"
    prefix = prefix_source.split("_", 1)[0] + "_" if "_" in prefix_source[:8] else ""
    return f"{prefix}…{fp[:8]}"
