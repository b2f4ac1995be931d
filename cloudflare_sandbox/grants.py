"""Grants and the tokens hanging off them.

A *grant* is one authorization of one OAuth client by one user: created when an authorization code
is exchanged, carrying the granted scopes and the accounts chosen at consent, and owning a chain of
access and refresh tokens. Everything that ends an authorization (user revocation, client deletion,
refresh-token or code reuse, revocation through RFC 7009) ends the grant, which is how Ory Hydra
(Cloudflare's OAuth server) invalidates a whole token chain.
"""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

from .runtime import Settings
from .scopes import OFFLINE_ACCESS
from .store import dumps, loads
from .tokens import new_access_token, new_refresh_token, sha256_hex


def load_client(conn: sqlite3.Connection, client_id: str | None) -> sqlite3.Row | None:
    """A registered, not deleted client."""
    if not client_id:
        return None
    return conn.execute("SELECT * FROM clients WHERE client_id=? AND deleted_at IS NULL", (client_id,)).fetchone()


def create_grant(
    conn: sqlite3.Connection, *, client_id: str, user_id: str, scopes: list[str], accounts: list[str] | str, now: float
) -> str:
    """Insert an active grant and return its id."""
    grant_id = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO grants(id, client_id, user_id, scopes, accounts, status, created_at) VALUES (?,?,?,?,?,'active',?)",
        (grant_id, client_id, user_id, dumps(scopes), dumps(accounts), now),
    )
    return grant_id


def issue_tokens(
    conn: sqlite3.Connection, settings: Settings, grant_id: str, *, with_refresh: bool, now: float
) -> tuple[str, str | None, int]:
    """Mint an access token (and a refresh token) for a grant; returns (access, refresh, expires_in)."""
    ttl = int(settings.access_ttl)
    access = new_access_token()
    conn.execute(
        "INSERT INTO access_tokens(token_hash, grant_id, created_at, expires_at, revoked) VALUES (?,?,?,?,0)",
        (sha256_hex(access), grant_id, now, now + ttl),
    )
    refresh: str | None = None
    if with_refresh:
        refresh = new_refresh_token()
        refresh_hash = sha256_hex(refresh)
        refresh_ttl = int(settings.refresh_ttl)
        conn.execute(
            "INSERT INTO refresh_tokens(token_hash, grant_id, status, created_at, expires_at) VALUES (?,?,'current',?,?)",
            (refresh_hash, grant_id, now, now + refresh_ttl if refresh_ttl else None),
        )
        conn.execute("UPDATE grants SET current_refresh_hash=? WHERE id=?", (refresh_hash, grant_id))
    return access, refresh, ttl


def wants_refresh(scopes: list[str]) -> bool:
    """Refresh tokens come back only when ``offline_access`` was granted [cf-code][3p]."""
    return OFFLINE_ACCESS in scopes


def revoke_grant(conn: sqlite3.Connection, grant_id: str, reason: str, now: float, *, kill_access: bool = True) -> bool:
    """End a grant; returns True if it was active.

    Its refresh tokens stop working at once. Its access tokens stop too unless ``kill_access`` is
    false (only used for RFC 7009 revocation of a refresh token when the setting
    ``revoke_refresh_kills_access`` is off: then issued access tokens live until they expire).
    Rotated refresh tokens keep their status so a later presentation still counts as a reuse.
    """
    changed = conn.execute(
        "UPDATE grants SET status='revoked', revoked_reason=?, revoked_at=?, access_survives=? "
        "WHERE id=? AND status='active'",
        (reason, now, 0 if kill_access else 1, grant_id),
    ).rowcount
    if kill_access:
        conn.execute("UPDATE grants SET access_survives=0 WHERE id=?", (grant_id,))
    conn.execute("UPDATE refresh_tokens SET status='revoked' WHERE grant_id=? AND status='current'", (grant_id,))
    return bool(changed)


def revoke_user_client(conn: sqlite3.Connection, user_id: str, client_id: str, reason: str, now: float) -> int:
    """End every active grant of one user for one client (Connected applications › Revoke)."""
    ids = [
        row["id"]
        for row in conn.execute(
            "SELECT id FROM grants WHERE user_id=? AND client_id=? AND status='active'", (user_id, client_id)
        )
    ]
    for grant_id in ids:
        revoke_grant(conn, grant_id, reason, now)
    return len(ids)


def grant_view(row: sqlite3.Row, active_refresh_hashes: list[str]) -> dict[str, Any]:
    """Ground-truth JSON for one grant (hashes only, never tokens)."""
    return {
        "id": row["id"],
        "client_id": row["client_id"],
        "user_id": row["user_id"],
        "user_email": row["email"],
        "status": row["status"],
        "revoked_reason": row["revoked_reason"],
        "revoked_at": row["revoked_at"],
        "created_at": row["created_at"],
        "scopes": loads(row["scopes"]),
        "accounts": loads(row["accounts"]),
        "current_refresh_token_sha256": row["current_refresh_hash"],
        "active_refresh_token_sha256s": active_refresh_hashes,
        "refresh_count": row["refresh_count"],
        "reuse_count": row["reuse_count"],
        "grace_count": row["grace_count"],
        "last_refresh_at": row["last_refresh_at"],
    }


def list_grants(conn: sqlite3.Connection, where: str = "", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Ground truth for grants matching an optional SQL condition on ``g``."""
    rows = conn.execute(
        "SELECT g.*, u.email FROM grants g JOIN users u ON u.id=g.user_id "
        + (f"WHERE {where} " if where else "")
        + "ORDER BY g.created_at, g.id",
        params,
    ).fetchall()
    active: dict[str, list[str]] = {}
    if rows:
        if len(rows) == 1:
            refresh_rows = conn.execute(
                "SELECT grant_id, token_hash FROM refresh_tokens WHERE status='current' AND grant_id=? "
                "ORDER BY created_at",
                (rows[0]["id"],),
            )
        else:
            refresh_rows = conn.execute(
                "SELECT grant_id, token_hash FROM refresh_tokens WHERE status='current' ORDER BY created_at"
            )
        for refresh_row in refresh_rows:
            active.setdefault(refresh_row["grant_id"], []).append(refresh_row["token_hash"])
    return [grant_view(row, active.get(row["id"], [])) for row in rows]
