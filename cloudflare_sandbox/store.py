"""SQLite persistence for the sandbox.

Everything the sandbox knows (users, accounts, zones, DNS records, OAuth clients, sessions, pending
authorizations, codes, grants, tokens, legacy API tokens) lives in one SQLite file so a restart keeps
it. Concurrency model: the HTTP server runs one thread per connection; reads use pooled connections
in autocommit mode (WAL lets them run beside a writer), and every write runs inside
``BEGIN IMMEDIATE`` on a single writer connection behind a process-wide lock. That makes each
refresh-token rotation atomic: of ten concurrent refreshes with the same token exactly one sees it as
current, the others see it as already rotated. This mirrors the real server's behaviour the portal
has to guard against.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    first_name TEXT NOT NULL DEFAULT '',
    last_name TEXT NOT NULL DEFAULT '',
    created_on REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_on REAL NOT NULL,
    oauth_disabled_at REAL
);
CREATE TABLE IF NOT EXISTS memberships (
    user_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'Administrator',
    PRIMARY KEY (user_id, account_id)
);
CREATE INDEX IF NOT EXISTS memberships_account ON memberships(account_id);
CREATE TABLE IF NOT EXISTS zones (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    status TEXT NOT NULL,
    plan TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    type TEXT NOT NULL DEFAULT 'full',
    created_on REAL NOT NULL,
    modified_on REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS zones_account ON zones(account_id, name);
CREATE TABLE IF NOT EXISTS dns_records (
    id TEXT PRIMARY KEY,
    zone_id TEXT NOT NULL,
    type TEXT NOT NULL,
    name TEXT NOT NULL,
    content TEXT NOT NULL,
    ttl INTEGER NOT NULL,
    proxied INTEGER NOT NULL DEFAULT 0,
    priority INTEGER,
    comment TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    settings TEXT NOT NULL DEFAULT '{}',
    created_on REAL NOT NULL,
    modified_on REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dns_records_zone ON dns_records(zone_id, name);
CREATE TABLE IF NOT EXISTS purges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    zone_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    body TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS zone_settings (
    zone_id TEXT NOT NULL,
    setting_id TEXT NOT NULL,
    value TEXT NOT NULL,
    modified_on REAL,
    PRIMARY KEY (zone_id, setting_id)
);
CREATE TABLE IF NOT EXISTS writes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    zone_id TEXT NOT NULL,
    record_id TEXT,
    setting_id TEXT,
    grant_id TEXT,
    api_token_id TEXT,
    token_sha256 TEXT NOT NULL,
    user_id TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    body TEXT,
    before TEXT,
    after TEXT,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS writes_zone ON writes(zone_id, id);
CREATE INDEX IF NOT EXISTS writes_grant ON writes(grant_id, id);
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    name TEXT NOT NULL,
    logo_uri TEXT,
    redirect_uris TEXT NOT NULL,
    scopes TEXT NOT NULL,
    optional_scopes TEXT NOT NULL,
    visibility TEXT NOT NULL,
    publisher_domain TEXT,
    domain_verified INTEGER NOT NULL DEFAULT 0,
    owner_account_id TEXT,
    token_endpoint_auth_method TEXT,
    created_at REAL NOT NULL,
    deleted_at REAL
);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS auth_requests (
    id TEXT PRIMARY KEY,
    session_hash TEXT NOT NULL,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    redirect_uri_in_request INTEGER NOT NULL,
    scopes TEXT NOT NULL,
    state TEXT,
    code_challenge TEXT,
    code_challenge_method TEXT,
    created_at REAL NOT NULL,
    used INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS codes (
    code_hash TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    redirect_uri_in_request INTEGER NOT NULL,
    scopes TEXT NOT NULL,
    accounts TEXT NOT NULL,
    code_challenge TEXT,
    code_challenge_method TEXT,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL,
    grant_id TEXT
);
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    scopes TEXT NOT NULL,
    accounts TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active',
    revoked_reason TEXT,
    revoked_at REAL,
    access_survives INTEGER NOT NULL DEFAULT 0,
    current_refresh_hash TEXT,
    refresh_count INTEGER NOT NULL DEFAULT 0,
    reuse_count INTEGER NOT NULL DEFAULT 0,
    grace_count INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    last_refresh_at REAL
);
CREATE INDEX IF NOT EXISTS grants_client ON grants(client_id);
CREATE INDEX IF NOT EXISTS grants_user ON grants(user_id, client_id);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    rotated_at REAL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS refresh_tokens_grant ON refresh_tokens(grant_id, status);
CREATE TABLE IF NOT EXISTS access_tokens (
    token_hash TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS access_tokens_grant ON access_tokens(grant_id, revoked);
CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    accounts TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    policies TEXT NOT NULL DEFAULT '[]',
    owner_account_id TEXT,
    not_before REAL,
    modified_at REAL,
    last_used_at REAL,
    condition TEXT
);
"""

#: Tables wiped by a reset, children first.
TABLES = (
    "writes",
    "zone_settings",
    "purges",
    "api_tokens",
    "access_tokens",
    "refresh_tokens",
    "grants",
    "codes",
    "auth_requests",
    "sessions",
    "clients",
    "dns_records",
    "zones",
    "memberships",
    "accounts",
    "users",
    "meta",
)


def dumps(value: Any) -> str:
    """Compact JSON for list/dict columns."""
    return json.dumps(value, separators=(",", ":"))


def loads(value: str | None) -> Any:
    """Inverse of :func:`dumps`; ``None`` stays ``None``."""
    return None if value is None else json.loads(value)


class Store:
    """Thread-safe access to the sandbox database (see the module docstring for the model)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._pool: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._writer = self._connect()
        self._writer.execute("PRAGMA journal_mode=WAL")
        self._writer.executescript(SCHEMA)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Bring a database created by an older sandbox up to date (``CREATE TABLE IF NOT EXISTS``
        leaves existing tables alone, and developers keep their database across upgrades)."""
        columns = {r["name"] for r in self._writer.execute("PRAGMA table_info(dns_records)")}
        for name, ddl in (("tags", "TEXT NOT NULL DEFAULT '[]'"), ("settings", "TEXT NOT NULL DEFAULT '{}'")):
            if name not in columns:
                self._writer.execute(f"ALTER TABLE dns_records ADD COLUMN {name} {ddl}")
        columns = {r["name"] for r in self._writer.execute("PRAGMA table_info(api_tokens)")}
        for name, ddl in (
            ("policies", "TEXT NOT NULL DEFAULT '[]'"),
            ("owner_account_id", "TEXT"),
            ("not_before", "REAL"),
            ("modified_at", "REAL"),
            ("last_used_at", "REAL"),
            ("condition", "TEXT"),
        ):
            if name not in columns:
                self._writer.execute(f"ALTER TABLE api_tokens ADD COLUMN {name} {ddl}")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A pooled autocommit connection for reads (each statement sees a committed snapshot)."""
        try:
            conn = self._pool.get_nowait()
        except queue.Empty:
            conn = self._connect()
        try:
            yield conn
        finally:
            self._pool.put(conn)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One serialised write transaction; rolled back if the body raises."""
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def wipe(self, conn: sqlite3.Connection) -> None:
        """Delete every row (inside the caller's write transaction)."""
        for table in TABLES:
            conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names

    def close(self) -> None:
        """Close all connections (best effort; used at shutdown)."""
        with self._write_lock:
            self._writer.close()
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                break
