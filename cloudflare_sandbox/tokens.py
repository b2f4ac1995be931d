"""Token formats and hashing.

Formats follow what Cloudflare hands out: opaque access tokens prefixed ``cfoat_`` [cf-code], user API
tokens prefixed ``cfut_`` [doc]. The refresh-token prefix ``cfort_`` is the sandbox's own choice
[guess]; clients must treat every token as opaque anyway. Only SHA-256 hashes of tokens, codes and
client secrets are written to the database, so a copy of the sandbox database never contains a
usable credential; ground truth reports hashes too and tests compare them with the hash of what the
portal stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Final

ACCESS_PREFIX: Final = "cfoat_"
REFRESH_PREFIX: Final = "cfort_"
API_TOKEN_PREFIX: Final = "cfut_"

_PBKDF2_ROUNDS: Final = 20_000


def sha256_hex(value: str) -> str:
    """Hex SHA-256 of a UTF-8 string: the only form in which secrets are stored."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def new_access_token() -> str:
    """``cfoat_`` + 43 URL-safe characters (256 random bits)."""
    return ACCESS_PREFIX + secrets.token_urlsafe(32)


def new_refresh_token() -> str:
    """``cfort_`` + 43 URL-safe characters (256 random bits)."""
    return REFRESH_PREFIX + secrets.token_urlsafe(32)


def new_code() -> str:
    """Authorization code: 43 URL-safe characters."""
    return secrets.token_urlsafe(32)


def new_api_token() -> str:
    """Legacy user API token: ``cfut_`` + 40 URL-safe characters."""
    return API_TOKEN_PREFIX + secrets.token_urlsafe(30)


def pkce_s256(verifier: str) -> str:
    """RFC 7636 S256 transform: BASE64URL(SHA256(ASCII(verifier))) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def hash_password(password: str, *, salt: str | None = None) -> str:
    """PBKDF2 hash for sandbox logins (sandbox passwords are public; this only avoids plaintext)."""
    salt = salt or secrets.token_hex(8)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode("ascii"), _PBKDF2_ROUNDS)
    return f"pbkdf2${_PBKDF2_ROUNDS}${salt}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of a password against :func:`hash_password` output."""
    try:
        _, rounds, salt, expected = stored.split("$")
    except ValueError:
        return False
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode("ascii"), int(rounds))
    return hmac.compare_digest(digest.hex(), expected)


def same_secret(presented: str, stored_hash: str | None) -> bool:
    """Constant-time comparison of a presented secret with a stored SHA-256 hash."""
    if not stored_hash:
        return False
    return hmac.compare_digest(sha256_hex(presented), stored_hash)
