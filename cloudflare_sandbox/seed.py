"""Deterministic seed data: users, accounts, zones, DNS records and the demo OAuth client.

Ids are 32 lowercase hex characters (the shape of Cloudflare account, zone and record ids [doc])
derived from a name with :func:`stable_id`, so tests and fixtures elsewhere can compute them without
asking the sandbox: ``user_id("alice@example.com")``, ``account_id("Acme Corp")``,
``zone_id("acme.com")``. All sandbox users share the public password :data:`SANDBOX_PASSWORD`; this
is a local test double and must never hold a real credential.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from datetime import UTC, datetime
from typing import Final

from .store import dumps, loads
from .tokens import hash_password, sha256_hex

SANDBOX_PASSWORD: Final = "sandbox-password"

ALICE_EMAIL: Final = "alice@example.com"
BOB_EMAIL: Final = "bob@example.com"
CAROL_EMAIL: Final = "carol@example.com"

ACME_CORP: Final = "Acme Corp"
ACME_STAGING: Final = "Acme Staging"
BIGSHOP: Final = "Bigshop Ltd"
CAROLS_BAKERY: Final = "Carol's Bakery"
EXAMPLE_AGENCY: Final = "Example Agency"

#: Fixed UUID-shaped client id (Cloudflare client ids look like UUIDs [doc]).
DEMO_CLIENT_ID: Final = "5d1f8e52-3c0a-4b7e-9f61-2a8c4d7b0e93"
#: Demo client secret; override with ``CF_SANDBOX_DEMO_CLIENT_SECRET`` (read at import time).
DEMO_CLIENT_SECRET: Final = os.environ.get("CF_SANDBOX_DEMO_CLIENT_SECRET", "sandbox-demo-client-secret")
DEMO_CLIENT_NAME: Final = "Example Agency Portal"
DEMO_PUBLISHER_DOMAIN: Final = "agency.example"
DEMO_REDIRECT_URIS: Final[tuple[str, ...]] = (
    "http://127.0.0.1:8000/oauth/cloudflare/callback/",
    "http://localhost:8000/oauth/cloudflare/callback/",
)
DEMO_SCOPES: Final[tuple[str, ...]] = (
    "offline_access",
    "user-details.read",
    "account-settings.read",
    "zone.read",
    "dns.read",
)
#: Only scopes some portal action uses: ``analytics.read`` was dropped because nothing reads analytics.
DEMO_OPTIONAL_SCOPES: Final[tuple[str, ...]] = ("dns.write", "cache.purge", "zone-settings.read")

#: Seed timestamps are fixed so API answers are reproducible.
SEED_EPOCH: Final = datetime(2024, 1, 15, 10, 0, tzinfo=UTC).timestamp()

BIGSHOP_ZONE_COUNT: Final = 125


def stable_id(name: str) -> str:
    """32 lowercase hex characters from SHA-256 of ``name``: stable across runs and machines."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:32]


def user_id(email: str) -> str:
    """Id of the sandbox user with this email."""
    return stable_id("user:" + email.strip().lower())


def account_id(name: str) -> str:
    """Id of the sandbox account with this name."""
    return stable_id("account:" + name)


def zone_id(name: str) -> str:
    """Id of the sandbox zone with this name."""
    return stable_id("zone:" + name.lower())


def dns_record_id(zone_name: str, record_type: str, name: str, content: str) -> str:
    """Id of a seeded DNS record."""
    return stable_id(f"dns:{zone_name}:{record_type}:{name}:{content}")


ACME_CORP_ID: Final = account_id(ACME_CORP)
ACME_STAGING_ID: Final = account_id(ACME_STAGING)
BIGSHOP_ID: Final = account_id(BIGSHOP)
CAROLS_BAKERY_ID: Final = account_id(CAROLS_BAKERY)
EXAMPLE_AGENCY_ID: Final = account_id(EXAMPLE_AGENCY)
ALICE_ID: Final = user_id(ALICE_EMAIL)
BOB_ID: Final = user_id(BOB_EMAIL)
CAROL_ID: Final = user_id(CAROL_EMAIL)


def bigshop_zone_names() -> list[str]:
    """``bigshop-001.com`` … ``bigshop-125.com`` (every tenth one is ``pending``)."""
    return [f"bigshop-{i:03d}.com" for i in range(1, BIGSHOP_ZONE_COUNT + 1)]


#: account name -> [(zone name, status, plan)]
SEED_ZONES: Final[dict[str, list[tuple[str, str, str]]]] = {
    ACME_CORP: [
        ("acme.com", "active", "Pro Website"),
        ("acme.net", "active", "Free Website"),
        ("acme.io", "pending", "Free Website"),
    ],
    ACME_STAGING: [("staging-acme.dev", "active", "Free Website")],
    BIGSHOP: [
        (name, "pending" if i % 10 == 0 else "active", "Free Website")
        for i, name in enumerate(bigshop_zone_names(), start=1)
    ],
    CAROLS_BAKERY: [
        ("carols-bakery.com", "active", "Free Website"),
        ("carols-bakery.co.uk", "active", "Free Website"),
    ],
    EXAMPLE_AGENCY: [],
}

#: (email, first name, last name, account names)
SEED_USERS: Final[tuple[tuple[str, str, str, tuple[str, ...]], ...]] = (
    (ALICE_EMAIL, "Alice", "Anderson", (ACME_CORP, ACME_STAGING)),
    (BOB_EMAIL, "Bob", "Brown", (BIGSHOP, ACME_CORP)),
    (CAROL_EMAIL, "Carol", "Clark", (CAROLS_BAKERY,)),
)


def insert_user(
    conn: sqlite3.Connection,
    email: str,
    *,
    password: str = SANDBOX_PASSWORD,
    first_name: str = "",
    last_name: str = "",
    created_on: float = SEED_EPOCH,
) -> str:
    """Create a user (or update its password and names) and return its id."""
    uid = user_id(email)
    conn.execute(
        "INSERT INTO users(id, email, password_hash, first_name, last_name, created_on) VALUES (?,?,?,?,?,?) "
        "ON CONFLICT(id) DO UPDATE SET password_hash=excluded.password_hash, "
        "first_name=excluded.first_name, last_name=excluded.last_name",
        (uid, email.strip().lower(), hash_password(password), first_name, last_name, created_on),
    )
    return uid


def insert_account(conn: sqlite3.Connection, name: str, *, created_on: float = SEED_EPOCH) -> str:
    """Create an account if it does not exist and return its id."""
    aid = account_id(name)
    conn.execute(
        "INSERT OR IGNORE INTO accounts(id, name, created_on) VALUES (?,?,?)",
        (aid, name, created_on),
    )
    return aid


def add_membership(conn: sqlite3.Connection, uid: str, aid: str, role: str = "Administrator") -> None:
    """Make a user a member of an account (every sandbox member may administer the account)."""
    conn.execute("INSERT OR IGNORE INTO memberships(user_id, account_id, role) VALUES (?,?,?)", (uid, aid, role))


def insert_zone(
    conn: sqlite3.Connection,
    name: str,
    aid: str,
    *,
    status: str = "active",
    plan: str = "Free Website",
    created_on: float = SEED_EPOCH,
    records: bool = True,
    host_number: int = 10,
) -> str:
    """Create a zone with a few typical DNS records and return its id."""
    zid = zone_id(name)
    conn.execute(
        "INSERT INTO zones(id, name, account_id, status, plan, paused, type, created_on, modified_on) "
        "VALUES (?,?,?,?,?,0,'full',?,?)",
        (zid, name.lower(), aid, status, plan, created_on, created_on),
    )
    if records:
        rows = [
            ("A", name, f"192.0.2.{host_number % 250 + 1}", 1, 1, None),
            ("TXT", name, "v=spf1 -all", 3600, 0, None),
        ]
        if not name.startswith("bigshop-"):
            rows.append(("CNAME", f"www.{name}", name, 1, 1, None))
            rows.append(("MX", name, f"mail.{name}", 3600, 0, 10))
        conn.executemany(
            "INSERT INTO dns_records(id, zone_id, type, name, content, ttl, proxied, priority, comment, "
            "created_on, modified_on) VALUES (?,?,?,?,?,?,?,?,NULL,?,?)",
            [
                (
                    dns_record_id(name, rtype, rname, content),
                    zid,
                    rtype,
                    rname,
                    content,
                    ttl,
                    proxied,
                    prio,
                    created_on,
                    created_on,
                )
                for rtype, rname, content, ttl, proxied, prio in rows
            ],
        )
    return zid


def upsert_client(
    conn: sqlite3.Connection,
    *,
    client_id: str,
    client_secret: str | None,
    name: str,
    redirect_uris: list[str],
    scopes: list[str],
    optional_scopes: list[str],
    visibility: str,
    publisher_domain: str | None,
    domain_verified: bool,
    owner_account_id: str | None,
    logo_uri: str | None = None,
    token_endpoint_auth_method: str | None = None,
    now: float,
) -> None:
    """Create or replace an OAuth client; a ``None`` secret keeps the existing one.

    Re-registering a deleted client id brings it back (with no grants), which lets tests reuse ids.
    """
    existing = conn.execute("SELECT secret_hash FROM clients WHERE client_id=?", (client_id,)).fetchone()
    if client_secret is None and existing is None:
        raise ValueError("client_secret is required for a new client")
    secret_hash = sha256_hex(client_secret) if client_secret is not None else existing["secret_hash"]
    conn.execute(
        "INSERT INTO clients(client_id, secret_hash, name, logo_uri, redirect_uris, scopes, optional_scopes, "
        "visibility, publisher_domain, domain_verified, owner_account_id, token_endpoint_auth_method, created_at, "
        "deleted_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,NULL) ON CONFLICT(client_id) DO UPDATE SET "
        "secret_hash=excluded.secret_hash, name=excluded.name, logo_uri=excluded.logo_uri, "
        "redirect_uris=excluded.redirect_uris, scopes=excluded.scopes, optional_scopes=excluded.optional_scopes, "
        "visibility=excluded.visibility, publisher_domain=excluded.publisher_domain, "
        "domain_verified=excluded.domain_verified, owner_account_id=excluded.owner_account_id, "
        "token_endpoint_auth_method=excluded.token_endpoint_auth_method, deleted_at=NULL",
        (
            client_id,
            secret_hash,
            name,
            logo_uri,
            dumps(list(redirect_uris)),
            dumps(list(scopes)),
            dumps(list(optional_scopes)),
            visibility,
            publisher_domain,
            1 if domain_verified else 0,
            owner_account_id,
            token_endpoint_auth_method,
            now,
        ),
    )


def seed(conn: sqlite3.Connection, now: float) -> None:
    """Fill an empty database (inside the caller's write transaction)."""
    host = 10
    for account_name, zones in SEED_ZONES.items():
        aid = insert_account(conn, account_name)
        for offset, (zone_name, status, plan) in enumerate(zones):
            host += 1
            insert_zone(
                conn,
                zone_name,
                aid,
                status=status,
                plan=plan,
                created_on=SEED_EPOCH + offset * 3600,
                host_number=host,
            )
    for email, first, last, accounts in SEED_USERS:
        uid = insert_user(conn, email, first_name=first, last_name=last)
        for account_name in accounts:
            add_membership(conn, uid, account_id(account_name))
    upsert_client(
        conn,
        client_id=DEMO_CLIENT_ID,
        client_secret=DEMO_CLIENT_SECRET,
        name=DEMO_CLIENT_NAME,
        redirect_uris=list(DEMO_REDIRECT_URIS),
        scopes=list(DEMO_SCOPES),
        optional_scopes=list(DEMO_OPTIONAL_SCOPES),
        visibility="public",
        publisher_domain=DEMO_PUBLISHER_DOMAIN,
        domain_verified=True,
        owner_account_id=EXAMPLE_AGENCY_ID,
        now=now,
    )
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('seeded_at', ?)", (repr(now),))
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('reuse_total', '0')")


def apply_environment(conn: sqlite3.Connection) -> None:
    """Apply start-up overrides to the demo client (run at every start, after seeding).

    ``CF_SANDBOX_DEMO_CLIENT_SECRET`` (if set) replaces the demo secret; ``CF_SANDBOX_DEMO_REDIRECT_URIS``
    (comma-separated) adds redirect URIs, e.g. for a portal served on another port.
    """
    row = conn.execute("SELECT redirect_uris FROM clients WHERE client_id=?", (DEMO_CLIENT_ID,)).fetchone()
    if row is None:
        return
    secret = os.environ.get("CF_SANDBOX_DEMO_CLIENT_SECRET")
    if secret:
        conn.execute("UPDATE clients SET secret_hash=? WHERE client_id=?", (sha256_hex(secret), DEMO_CLIENT_ID))
    extra = [uri.strip() for uri in os.environ.get("CF_SANDBOX_DEMO_REDIRECT_URIS", "").split(",") if uri.strip()]
    if extra:
        uris = loads(row["redirect_uris"])
        uris.extend(uri for uri in extra if uri not in uris)
        conn.execute("UPDATE clients SET redirect_uris=? WHERE client_id=?", (dumps(uris), DEMO_CLIENT_ID))
