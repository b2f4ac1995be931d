"""A subset of Cloudflare API v4 under ``/client/v4``.

Envelope ``{success, errors, messages, result, result_info}`` and pagination ``result_info {page,
per_page, count, total_count, total_pages}`` as documented [doc]. Every endpoint enforces one OAuth
scope; a missing scope answers 403 code 10000 "Authentication error", an unknown, revoked or expired
token 403 code 9109 "Invalid access token", a malformed ``Authorization`` header 400 code 6003 with
6111 in the error chain [doc]. A token sees only the accounts chosen at consent and their zones;
anything else looks like a non-existent object (404, code 7003). Rate limiting is per Cloudflare user
(all of that user's tokens share the budget) with ``Ratelimit`` / ``Ratelimit-Policy`` headers and
429 + ``Retry-After`` + code 971 beyond it [doc].
"""

from __future__ import annotations

import ipaddress
import math
import re
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import api_tokens as at
from .grants import revoke_grant
from .scopes import CATALOGUE
from .store import dumps, loads
from .tokens import API_TOKEN_PREFIX, sha256_hex
from .web import Request, Response, json_response

if TYPE_CHECKING:
    from .server import SandboxApp

API_PREFIX = "/client/v4"
ANY_TOKEN = "*"
API_TOKEN_ONLY = "api-token"
ACCOUNT_TOKEN_ONLY = "account-token"
#: ``last_used_on`` is refreshed at most this often, so busy tokens do not queue on the writer lock.
LAST_USED_RESOLUTION = 60


# ------------------------------------------------------------------------------------------ helpers


def iso(ts: float) -> str:
    """Cloudflare's timestamp format: ``2024-01-15T10:00:00.000000Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def envelope(
    result: Any, *, result_info: dict[str, int] | None = None, messages: list[Any] | None = None, status: int = 200
) -> Response:
    """A successful API answer."""
    payload: dict[str, Any] = {"success": True, "errors": [], "messages": messages or [], "result": result}
    if result_info is not None:
        payload["result_info"] = result_info
    return json_response(status, payload)


def api_error(status: int, code: int, message: str, chain: list[dict[str, Any]] | None = None) -> Response:
    """A failed API answer with one error (and an optional ``error_chain``)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if chain:
        error["error_chain"] = chain
    return json_response(status, {"success": False, "errors": [error], "messages": [], "result": None})


def rate_limited(retry_after: int, code: int = 971) -> Response:
    """429 with the documented body and ``Retry-After`` [doc]; ``code`` 10429 is the variant seen in
    the wild (setting ``rate_limit_code``)."""
    response = api_error(429, code, "Please wait and consider throttling your request speed")
    return response.with_header("Retry-After", str(retry_after))


def not_found(path: str) -> Response:
    """What Cloudflare answers for an object the caller cannot see."""
    return api_error(404, 7003, f"Could not route to {path}, perhaps your object identifier is invalid?")


@dataclass(frozen=True)
class Principal:
    """Who is calling: an OAuth grant's access token or an API token (user- or account-owned).

    API tokens carry ``policies``; the dispatcher binds ``acting_scope`` (the route's scope) so the
    handlers' account and zone lists show only what the policies reach for that scope.
    """

    kind: str  # "oauth" | "api_token"
    user_id: str
    email: str
    scopes: frozenset[str]
    accounts: list[str] | str
    created_at: float
    token_id: str
    token_sha256: str = ""
    policies: tuple[dict[str, Any], ...] | None = None
    owner_account_id: str | None = None
    last_used_at: float | None = None
    condition: dict[str, Any] | None = None
    acting_scope: str = ""

    def reaches(self, target: at.Target, scope: str | None = None) -> bool:
        """Whether the token's policies allow ``scope`` (default: the acting scope) on the target;
        always true for OAuth tokens, whose reach is the accounts chosen at consent."""
        if self.policies is None:
            return True
        return at.policies_allow(list(self.policies), scope or self.acting_scope, target)

    @property
    def grant_id(self) -> str | None:
        """The OAuth grant behind the token (``None`` for a legacy API token)."""
        return self.token_id if self.kind == "oauth" else None


def record_write(
    conn: sqlite3.Connection,
    req: Request,
    p: Principal,
    *,
    kind: str,
    zone_id: str,
    now: float,
    body: Any = None,
    before: Any = None,
    after: Any = None,
    record_id: str | None = None,
    setting_id: str | None = None,
) -> None:
    """Ground truth: one row per change of Cloudflare data, in the transaction that made it.

    Tests prove "applied exactly once" and "made with this grant" from these rows; the token is kept
    only as its SHA-256 hash.
    """
    conn.execute(
        "INSERT INTO writes(kind, zone_id, record_id, setting_id, grant_id, api_token_id, token_sha256, user_id, "
        "method, path, body, before, after, at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            kind,
            zone_id,
            record_id,
            setting_id,
            p.grant_id,
            p.token_id if p.kind == "api_token" else None,
            p.token_sha256,
            p.user_id,
            req.method,
            req.path,
            None if body is None else dumps(body),
            None if before is None else dumps(before),
            None if after is None else dumps(after),
            now,
        ),
    )


def resolve_bearer(conn: sqlite3.Connection, token: str, now: float) -> Principal | None:
    """The principal behind a bearer token, or ``None`` when it is unknown, revoked or expired."""
    token_hash = sha256_hex(token)
    if token.startswith((API_TOKEN_PREFIX, at.ACCOUNT_TOKEN_PREFIX)):
        row = api_token_row(conn, token)
        if row is None or token_status(row, now) != "active":
            return None
        policies = token_policies(row)
        return Principal(
            "api_token",
            row["user_id"],
            row["email"] or "",
            at.policies_scopes(policies),
            "all",
            row["created_at"],
            row["id"],
            token_hash,
            policies=tuple(policies),
            owner_account_id=row["owner_account_id"],
            last_used_at=row["last_used_at"],
            condition=loads(row["condition"]),
        )
    row = conn.execute(
        "SELECT a.expires_at, a.revoked, g.id, g.user_id, g.scopes, g.accounts, g.status, g.access_survives, "
        "g.created_at, u.email FROM access_tokens a JOIN grants g ON g.id=a.grant_id JOIN users u ON u.id=g.user_id "
        "WHERE a.token_hash=?",
        (token_hash,),
    ).fetchone()
    if row is None or row["revoked"] or row["expires_at"] <= now:
        return None
    if row["status"] != "active" and not row["access_survives"]:
        return None
    return Principal(
        "oauth",
        row["user_id"],
        row["email"],
        frozenset(loads(row["scopes"])),
        loads(row["accounts"]),
        row["created_at"],
        row["id"],
        token_hash,
    )


def api_token_row(conn: sqlite3.Connection, token: str) -> sqlite3.Row | None:
    """The stored API token (user- or account-owned) behind a presented token, whatever its status."""
    return conn.execute(
        "SELECT t.*, u.email FROM api_tokens t LEFT JOIN users u ON u.id=t.user_id WHERE t.token_hash=?",
        (sha256_hex(token),),
    ).fetchone()


def token_status(row: sqlite3.Row, now: float) -> str:
    """``active``, ``disabled`` or ``expired`` as Cloudflare reports it, or ``not_yet_valid`` (usable
    from ``not_before`` on; Cloudflare still reports such a token as ``active``)."""
    if row["status"] != "active":
        return str(row["status"])
    if row["expires_at"] is not None and row["expires_at"] <= now:
        return "expired"
    if row["not_before"] is not None and row["not_before"] > now:
        return "not_yet_valid"
    return "active"


def token_policies(row: sqlite3.Row) -> list[dict[str, Any]]:
    """The token's policies; tokens stored by an older sandbox (scopes + accounts only) get the
    equivalent policies."""
    policies = loads(row["policies"]) or []
    if not policies and loads(row["scopes"]):
        policies = at.legacy_policies(loads(row["scopes"]), loads(row["accounts"]), row["user_id"])
    return policies


def visible_accounts(conn: sqlite3.Connection, principal: Principal) -> list[sqlite3.Row]:
    """Accounts the token may use: the user's memberships ∩ the accounts chosen at consent.

    An account whose OAuth app access was switched off stays visible to grants created before the
    switch (Cloudflare: "existing grants stay" [doc]) and is hidden from grants created after it.
    An account-owned API token sees only its account; for an account-level scope, an API token sees
    the accounts its policies reach.
    """
    if principal.owner_account_id is not None:
        rows = conn.execute("SELECT * FROM accounts WHERE id=?", (principal.owner_account_id,)).fetchall()
    else:
        rows = conn.execute(
            "SELECT a.* FROM accounts a JOIN memberships m ON m.account_id=a.id WHERE m.user_id=? "
            "ORDER BY a.name, a.id",
            (principal.user_id,),
        ).fetchall()
    if principal.policies is not None and at.SCOPE_LEVEL.get(principal.acting_scope) == at.ACCOUNT:
        rows = [r for r in rows if principal.reaches(at.Target(at.ACCOUNT, r["id"]))]
    if principal.accounts != "all":
        allowed = set(principal.accounts)
        rows = [r for r in rows if r["id"] in allowed]
    if principal.kind == "oauth":
        rows = [r for r in rows if r["oauth_disabled_at"] is None or r["oauth_disabled_at"] > principal.created_at]
    return rows


def _int_param(req: Request, name: str, default: int) -> int | None:
    value = req.arg(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        return None


def paginate(
    req: Request, items: list[Any], *, default: int, minimum: int, maximum: int
) -> tuple[list[Any], dict[str, int]] | Response:
    """Slice ``items`` by ``page`` / ``per_page``; ``per_page`` is clamped to [minimum, maximum]."""
    page = _int_param(req, "page", 1)
    per_page = _int_param(req, "per_page", default)
    if page is None or per_page is None:
        return api_error(400, 1001, "Invalid request: page and per_page must be integers")
    page = max(1, page)
    per_page = min(max(per_page, minimum), maximum)
    total = len(items)
    chunk = items[(page - 1) * per_page : page * per_page]
    info = {
        "page": page,
        "per_page": per_page,
        "count": len(chunk),
        "total_count": total,
        "total_pages": math.ceil(total / per_page) if total else 0,
    }
    return chunk, info


def _text_filter(value: str, candidate: str) -> bool:
    """Cloudflare list filters: exact, or ``contains:`` / ``starts_with:`` / ``ends_with:``."""
    value_l, cand = value.lower(), candidate.lower()
    for prefix, test in (
        ("contains:", lambda v: v in cand),
        ("starts_with:", lambda v: cand.startswith(v)),
        ("ends_with:", lambda v: cand.endswith(v)),
        ("equal:", lambda v: cand == v),
    ):
        if value_l.startswith(prefix):
            return test(value_l[len(prefix) :])
    return cand == value_l


def _sort(
    items: list[dict[str, Any]], req: Request, keys: dict[str, Callable[[dict[str, Any]], Any]], default: str
) -> list[dict[str, Any]]:
    key = keys.get(req.arg("order") or default, keys[default])
    return sorted(items, key=key, reverse=(req.arg("direction") or "asc").lower() == "desc")


def _body(req: Request) -> dict[str, Any] | Response:
    try:
        data = req.json()
    except ValueError:
        return api_error(400, 6007, "Malformed JSON in request body")
    if not isinstance(data, dict):
        return api_error(400, 6007, "Malformed JSON in request body")
    return data


# ------------------------------------------------------------------------------------- serialisers


def account_view(row: sqlite3.Row) -> dict[str, Any]:
    """Account object; ``settings.oauth_app_access`` is a sandbox extension (see README)."""
    return {
        "id": row["id"],
        "name": row["name"],
        "type": "standard",
        "settings": {
            "enforce_twofactor": False,
            "api_access_enabled": None,
            "abuse_contact_email": None,
            "oauth_app_access": row["oauth_disabled_at"] is None,
        },
        "created_on": iso(row["created_on"]),
    }


def zone_view(row: sqlite3.Row) -> dict[str, Any]:
    """Zone object with the documented fields [doc]."""
    plan_id = row["plan"].split()[0].lower()
    return {
        "id": row["id"],
        "name": row["name"],
        "status": row["status"],
        "paused": bool(row["paused"]),
        "type": row["type"],
        "development_mode": 0,
        "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"],
        "original_name_servers": None,
        "original_registrar": None,
        "original_dnshost": None,
        "modified_on": iso(row["modified_on"]),
        "created_on": iso(row["created_on"]),
        "activated_on": iso(row["created_on"]) if row["status"] == "active" else None,
        "meta": {"step": 2, "custom_certificate_quota": 0, "page_rule_quota": 3, "phishing_detected": False},
        "owner": {"id": None, "type": "user", "email": None},
        "account": {"id": row["account_id"], "name": row["account_name"]},
        "permissions": [],
        "plan": {
            "id": plan_id,
            "name": row["plan"],
            "price": 0,
            "currency": "USD",
            "frequency": "",
            "is_subscribed": plan_id != "free",
            "can_subscribe": False,
            "legacy_id": plan_id,
            "legacy_discount": False,
            "externally_managed": False,
        },
    }


_PROXIABLE = {"A", "AAAA", "CNAME"}


def record_view(row: sqlite3.Row, zone_name: str) -> dict[str, Any]:
    """DNS record object."""
    data: dict[str, Any] = {
        "id": row["id"],
        "zone_id": row["zone_id"],
        "zone_name": zone_name,
        "name": row["name"],
        "type": row["type"],
        "content": row["content"],
        "proxiable": row["type"] in _PROXIABLE,
        "proxied": bool(row["proxied"]),
        "ttl": row["ttl"],
        "settings": loads(row["settings"]) or {},
        "meta": {},
        "comment": row["comment"],
        "tags": loads(row["tags"]) or [],
        "created_on": iso(row["created_on"]),
        "modified_on": iso(row["modified_on"]),
    }
    if row["priority"] is not None:
        data["priority"] = row["priority"]
    return data


# ----------------------------------------------------------------------------------------- handlers

Handler = Callable[["SandboxApp", Request, Principal, dict[str, str]], Response]


def get_user(app: SandboxApp, req: Request, p: Principal, params: dict[str, str]) -> Response:
    """``GET /user`` (``user-details.read``)."""
    with app.store.read() as conn:
        row = conn.execute("SELECT * FROM users WHERE id=?", (p.user_id,)).fetchone()
    return envelope(
        {
            "id": row["id"],
            "email": row["email"],
            "first_name": row["first_name"],
            "last_name": row["last_name"],
            "username": row["id"],
            "telephone": None,
            "country": None,
            "zipcode": None,
            "two_factor_authentication_enabled": False,
            "two_factor_authentication_locked": False,
            "created_on": iso(row["created_on"]),
            "modified_on": iso(row["created_on"]),
            "organizations": [],
            "has_pro_zones": False,
            "has_business_zones": False,
            "has_enterprise_zones": False,
            "suspended": False,
            "betas": [],
        }
    )


def _verify_view(row: sqlite3.Row, status: str) -> dict[str, Any]:
    view: dict[str, Any] = {"id": row["id"], "status": status}
    if row["expires_at"] is not None:
        view["expires_on"] = iso(row["expires_at"])
    if row["not_before"] is not None:
        view["not_before"] = iso(row["not_before"])
    return view


def verify_token(app: SandboxApp, req: Request, p: Principal, params: dict[str, str]) -> Response:
    """``GET /user/tokens/verify`` and ``GET /accounts/{account_id}/tokens/verify``:
    ``{id, status, expires_on?, not_before?}`` [doc]."""
    with app.store.read() as conn:
        row = conn.execute("SELECT * FROM api_tokens WHERE id=?", (p.token_id,)).fetchone()
    if row is None:  # deleted since the token was checked
        return api_error(401, 1000, "Invalid API Token")
    return envelope(
        _verify_view(row, "active"),
        messages=[{"code": 10000, "message": "This API Token is valid and active", "type": None}],
    )


def _verify_refusal(
    app: SandboxApp, route: Route, params: dict[str, str], token: str, p: Principal | None
) -> Response | None:
    """``None`` when the caller may verify itself here; otherwise the answer for a token of the
    wrong kind (401 code 1000) or an inactive one (the same 401, or with setting
    ``inactive_token_verify="status"`` 200 with its status)."""
    wanted_owner = params.get("account_id") if route.scope == ACCOUNT_TOKEN_ONLY else None
    if p is not None and p.kind == "api_token" and p.owner_account_id == wanted_owner:
        return None
    if p is None and app.settings.inactive_token_verify == "status":
        with app.store.read() as conn:
            row = api_token_row(conn, token)
        if row is not None and row["owner_account_id"] == wanted_owner:
            status = token_status(row, app.clock.now())
            return envelope(_verify_view(row, "active" if status == "not_yet_valid" else status))
    return api_error(401, 1000, "Invalid API Token")


# -------------------------------------------------------------------------- API token management


def token_view(row: sqlite3.Row, now: float) -> dict[str, Any]:
    """An API token as ``GET /user/tokens/{id}`` shows it [doc] (never the secret)."""
    status = token_status(row, now)
    view: dict[str, Any] = {
        "id": row["id"],
        "name": row["name"],
        "status": "active" if status == "not_yet_valid" else status,
        "issued_on": iso(row["created_at"]),
        "modified_on": iso(row["modified_at"] or row["created_at"]),
        "not_before": iso(row["not_before"]) if row["not_before"] is not None else None,
        "expires_on": iso(row["expires_at"]) if row["expires_at"] is not None else None,
        "last_used_on": iso(row["last_used_at"]) if row["last_used_at"] is not None else None,
        "policies": token_policies(row),
    }
    if row["condition"]:
        view["condition"] = loads(row["condition"])
    return view


def _owned_tokens(conn: sqlite3.Connection, p: Principal, params: dict[str, str]) -> tuple[str, tuple[str, ...]] | None:
    """SQL condition for the tokens this path lists: the user's own, or an account's (when the
    caller sees that account); ``None`` when the account is out of reach."""
    account_id = params.get("account_id")
    if account_id is None:
        return "user_id=? AND owner_account_id IS NULL", (p.user_id,)
    if account_id not in {r["id"] for r in visible_accounts(conn, p)}:
        return None
    return "owner_account_id=?", (account_id,)


def list_tokens(app: SandboxApp, req: Request, p: Principal, params: dict[str, str]) -> Response:
    """``GET /user/tokens`` ("API Tokens Read") and ``GET /accounts/{id}/tokens`` ("Account API
    Tokens Read")."""
    with app.store.read() as conn:
        owned = _owned_tokens(conn, p, params)
        if owned is None:
            return not_found(req.path)
        rows = conn.execute(
            f"SELECT * FROM api_tokens WHERE {owned[0]} ORDER BY created_at, id",  # noqa: S608 - fixed conditions
            owned[1],
        ).fetchall()
    now = app.clock.now()
    page = paginate(req, [token_view(r, now) for r in rows], default=20, minimum=5, maximum=50)
    if isinstance(page, Response):
        return page
    chunk, info = page
    return envelope(chunk, result_info=info)


def _owned_token(conn: sqlite3.Connection, p: Principal, params: dict[str, str]) -> sqlite3.Row | None:
    owned = _owned_tokens(conn, p, params)
    if owned is None:
        return None
    return conn.execute(
        f"SELECT * FROM api_tokens WHERE id=? AND {owned[0]}",  # noqa: S608 - fixed conditions
        (params["token_id"], *owned[1]),
    ).fetchone()


def get_token(app: SandboxApp, req: Request, p: Principal, params: dict[str, str]) -> Response:
    """``GET /user/tokens/{token_id}`` and ``GET /accounts/{account_id}/tokens/{token_id}``."""
    with app.store.read() as conn:
        row = _owned_token(conn, p, params)
    if row is None:
        return not_found(req.path)
    return envelope(token_view(row, app.clock.now()))


def delete_token(app: SandboxApp, req: Request, p: Principal, params: dict[str, str]) -> Response:
    """``DELETE /user/tokens/{token_id}`` ("API Tokens Write", or the token deleting itself) and the
    account-owned equivalent; the token stops working at once."""
    with app.store.write() as conn:
        row = _owned_token(conn, p, params)
        if row is None:
            return not_found(req.path)
        conn.execute("DELETE FROM api_tokens WHERE id=?", (row["id"],))
    return envelope({"id": row["id"]})


def list_permission_groups(app: SandboxApp, req: Request, p: Principal, params: dict[str, str]) -> Response:
    """``GET /user/tokens/permission_groups`` (every group) and
    ``GET /accounts/{account_id}/tokens/permission_groups`` (account and zone groups; filters ``name``
    and ``scope``). Any valid token may read them [guess]."""
    groups = list(at.PERMISSION_GROUPS)
    if "account_id" in params:
        groups = [g for g in groups if g.level != at.USER]
    name, scope = req.arg("name"), req.arg("scope")
    if name:
        groups = [g for g in groups if g.name.lower() == name.lower()]
    if scope:
        groups = [g for g in groups if g.level == scope]
    return envelope([g.view() for g in groups])


def list_accounts(app: SandboxApp, req: Request, p: Principal, params: dict[str, str]) -> Response:
    """``GET /accounts`` (``account-settings.read``): only the accounts chosen at consent."""
    with app.store.read() as conn:
        rows = visible_accounts(conn, p)
    items = [account_view(r) for r in rows]
    name = req.arg("name")
    if name:
        items = [a for a in items if _text_filter(name if ":" in name else f"contains:{name}", a["name"])]
    items = _sort(items, req, {"name": lambda a: a["name"].lower()}, "name")
    page = paginate(req, items, default=20, minimum=5, maximum=50)
    if isinstance(page, Response):
        return page
    chunk, info = page
    return envelope(chunk, result_info=info)


def get_account(app: SandboxApp, req: Request, p: Principal, params: dict[str, str]) -> Response:
    """``GET /accounts/{account_id}`` (``account-settings.read``)."""
    with app.store.read() as conn:
        rows = visible_accounts(conn, p)
    for row in rows:
        if row["id"] == params["account_id"]:
            return envelope(account_view(row))
    return not_found(req.path)


def _visible_zones(conn: sqlite3.Connection, p: Principal) -> list[sqlite3.Row]:
    accounts = {r["id"]: r["name"] for r in visible_accounts(conn, p)}
    if not accounts:
        return []
    marks = ",".join("?" * len(accounts))
    rows = conn.execute(
        "SELECT z.*, a.name AS account_name FROM zones z JOIN accounts a ON a.id=z.account_id "
        f"WHERE z.account_id IN ({marks}) ORDER BY z.name",  # noqa: S608 - placeholders only
        tuple(accounts),
    ).fetchall()
    return [r for r in rows if _zone_reached(p, r)]


def _zone_reached(p: Principal, row: sqlite3.Row) -> bool:
    if p.policies is None or at.SCOPE_LEVEL.get(p.acting_scope) != at.ZONE:
        return True
    return p.reaches(at.Target(at.ZONE, row["id"], row["account_id"]))


def _zone(conn: sqlite3.Connection, p: Principal, zone_id: str) -> sqlite3.Row | None:
    row = conn.execute(
        "SELECT z.*, a.name AS account_name FROM zones z JOIN accounts a ON a.id=z.account_id WHERE z.id=?",
        (zone_id,),
    ).fetchone()
    if row is None:
        return None
    if row["account_id"] not in {r["id"] for r in visible_accounts(conn, p)} or not _zone_reached(p, row):
        return None
    return row


def list_zones(app: SandboxApp, req: Request, p: Principal, params: dict[str, str]) -> Response:
    """``GET /zones`` (``zone.read``) with ``account.id``, ``account.name``, ``name``, ``status`` filters."""
    with app.store.read() as conn:
        rows = _visible_zones(conn, p)
    account_filter = req.arg("account.id")
    account_name = req.arg("account.name")
    name = req.arg("name")
    status = req.arg("status")
    if account_filter:
        rows = [r for r in rows if r["account_id"] == account_filter]
    if account_name:
        rows = [r for r in rows if _text_filter(account_name, r["account_name"])]
    if name:
        rows = [r for r in rows if _text_filter(name, r["name"])]
    if status:
        rows = [r for r in rows if r["status"] == status]
    items = [zone_view(r) for r in rows]
    items = _sort(
        items,
        req,
        {
            "name": lambda z: z["name"],
            "status": lambda z: (z["status"], z["name"]),
            "account.id": lambda z: (z["account"]["id"], z["name"]),
            "account.name": lambda z: (z["account"]["name"], z["name"]),
        },
        "name",
    )
    page = paginate(req, items, default=20, minimum=5, maximum=50)
    if isinstance(page, Response):
        return page
    chunk, info = page
    return envelope(chunk, result_info=info)


def get_zone(app: SandboxApp, req: Request, p: Principal, params: dict[str, str]) -> Response:
    """``GET /zones/{zone_id}`` (``zone.read``)."""
    with app.store.read() as conn:
        row = _zone(conn, p, params["zone_id"])
    if row is None:
        return not_found(req.path)
    return envelope(zone_view(row))


def list_records(app: SandboxApp, req: Request, p: Principal, params: dict[str, str]) -> Response:
    """``GET /zones/{zone_id}/dns_records`` (``dns.read``) with the SDK's filters (:func:`_record_filter`)."""
    with app.store.read() as conn:
        zone = _zone(conn, p, params["zone_id"])
        if zone is None:
            return not_found(req.path)
        rows = conn.execute(
            "SELECT * FROM dns_records WHERE zone_id=? ORDER BY name, type, id", (zone["id"],)
        ).fetchall()
    wanted = _record_filter(req)
    if wanted is not None:
        rows = [r for r in rows if wanted(r)]
    items = [record_view(r, zone["name"]) for r in rows]
    items = _sort(
        items,
        req,
        {
            "type": lambda r: (r["type"], r["name"]),
            "name": lambda r: (r["name"], r["type"]),
            "content": lambda r: (r["content"], r["name"]),
            "ttl": lambda r: (r["ttl"], r["name"]),
            "proxied": lambda r: (r["proxied"], r["name"]),
        },
        "type",
    )
    page = paginate(req, items, default=100, minimum=5, maximum=5000)
    if isinstance(page, Response):
        return page
    chunk, info = page
    return envelope(chunk, result_info=info)


_MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "exact": lambda value, cand: cand == value,
    "contains": lambda value, cand: value in cand,
    "startswith": lambda value, cand: cand.startswith(value),
    "endswith": lambda value, cand: cand.endswith(value),
}
RecordTest = Callable[[sqlite3.Row], bool]


def _tag_test(op: str, value: str) -> RecordTest:
    """``tag.<op>=<name>:<value>`` (``present`` / ``absent``: ``<name>`` only); case-insensitive [doc]."""
    tag_name, _, tag_value = value.lower().partition(":")

    def test(row: sqlite3.Row) -> bool:
        tags = dict(t.lower().partition(":")[::2] for t in loads(row["tags"]) or [])
        if op == "absent":
            return tag_name not in tags
        if tag_name not in tags:
            return False
        return op == "present" or _MATCHERS[op](tag_value, tags[tag_name])

    return test


def _record_filter(req: Request) -> RecordTest | None:
    """The DNS list filters the official SDK sends, combined as Cloudflare documents them.

    1. Each of ``name.*``, ``content.*``, ``comment.*`` (plus ``present`` / ``absent``), ``type``,
       ``proxied``, ``search`` and the legacy ``name`` / ``content`` (exact, or the ``contains:``
       prefix syntax) becomes one condition; text matches ignore case.
    2. The ``tag.*`` conditions are combined first, by ``tag_match`` (``all`` by default), into one.
    3. All conditions are combined by ``match``: ``all`` (default) is AND, ``any`` is OR.
    Returns ``None`` when no filter was given.
    """
    tests: list[RecordTest] = []
    tag_tests: list[RecordTest] = []
    for key, values in req.query.items():
        field, _, op = key.partition(".")
        for raw in values:
            value = raw.lower()
            if field in ("name", "content", "comment") and op in _MATCHERS:
                tests.append(lambda r, f=field, o=op, v=value: _MATCHERS[o](v, (r[f] or "").lower()))
            elif field == "comment" and op in ("present", "absent"):
                tests.append(lambda r, o=op: bool(r["comment"]) == (o == "present"))
            elif field in ("name", "content") and not op and raw:
                tests.append(lambda r, f=field, v=raw: _text_filter(v, r[f]))
            elif field == "tag" and (op in _MATCHERS or op in ("present", "absent")):
                tag_tests.append(_tag_test(op, raw))
            elif key == "type" and raw:
                wanted_type = raw.upper()
                tests.append(lambda r, v=wanted_type: r["type"] == v)
            elif key == "proxied" and value in ("true", "false"):
                tests.append(lambda r, v=value == "true": bool(r["proxied"]) == v)
            elif key == "search" and raw:
                tests.append(
                    lambda r, v=value: any(
                        v in (text or "").lower() for text in (r["name"], r["content"], r["comment"], r["tags"])
                    )
                )
    if tag_tests:
        combine_tags = any if (req.arg("tag_match") or "all").lower() == "any" else all
        tests.append(lambda r: combine_tags(t(r) for t in tag_tests))
    if not tests:
        return None
    combine = any if (req.arg("match") or "all").lower() == "any" else all
    return lambda r: combine(t(r) for t in tests)


def get_record(app: SandboxApp, req: Request, p: Principal, params: dict[str, str]) -> Response:
    """``GET /zones/{zone_id}/dns_records/{record_id}`` (``dns.read``)."""
    with app.store.read() as conn:
        zone = _zone(conn, p, params["zone_id"])
        if zone is None:
            return not_found(req.path)
        row = conn.execute(
            "SELECT * FROM dns_records WHERE id=? AND zone_id=?", (params["record_id"], zone["id"])
        ).fetchone()
    if row is None:
        return api_error(404, 81044, "Record does not exist.")
    return envelope(record_view(row, zone["name"]))


_TAG = re.compile(r"[A-Za-z0-9_.\-]{1,32}(:[^\s].{0,99})?")
_RECORD_SETTINGS = {"ipv4_only", "ipv6_only", "flatten_cname"}
_RECORD_TYPES = {"A", "AAAA", "CNAME", "MX", "TXT", "NS", "SRV", "CAA", "PTR"}


def _dns_validation(code: int, message: str) -> Response:
    return api_error(400, 1004, "DNS Validation Error", [{"code": code, "message": message}])


def _validate_record(
    conn: sqlite3.Connection, zone: sqlite3.Row, data: dict[str, Any], *, record_id: str | None
) -> dict[str, Any] | Response:
    """Check a full record (after merging a PATCH) and normalise its name."""
    rtype = str(data.get("type") or "").upper()
    if rtype not in _RECORD_TYPES:
        return _dns_validation(9000, f"Invalid or unsupported DNS record type '{data.get('type')}'.")
    raw_name = str(data.get("name") or "").strip().rstrip(".").lower()
    if not raw_name:
        return _dns_validation(9000, "DNS name is invalid.")
    zone_name = zone["name"]
    if raw_name == "@":
        name = zone_name
    elif raw_name == zone_name or raw_name.endswith("." + zone_name):
        name = raw_name
    else:
        name = f"{raw_name}.{zone_name}"
    if not re.fullmatch(r"[a-z0-9*_]([a-z0-9_\-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_\-]*[a-z0-9_])?)*", name):
        return _dns_validation(9000, "DNS name is invalid.")
    content = data.get("content")
    if not isinstance(content, str) or not content.strip():
        return _dns_validation(9007, "Content is required.")
    content = content.strip()
    if rtype == "A":
        try:
            ipaddress.IPv4Address(content)
        except ValueError:
            return _dns_validation(9005, "Content for A record must be a valid IPv4 address.")
    if rtype == "AAAA":
        try:
            ipaddress.IPv6Address(content)
        except ValueError:
            return _dns_validation(9006, "Content for AAAA record must be a valid IPv6 address.")
    ttl = data.get("ttl", 1)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not (ttl == 1 or 60 <= ttl <= 86400):
        return _dns_validation(9021, "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic.")
    proxied = data.get("proxied", False)
    if not isinstance(proxied, bool):
        return _dns_validation(9003, "Invalid 'proxied' value, must be a boolean.")
    if proxied and rtype not in _PROXIABLE:
        return _dns_validation(9004, "This record type cannot be proxied.")
    priority = data.get("priority")
    if rtype == "MX":
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 65535:
            return _dns_validation(9101, "MX records require a priority between 0 and 65535.")
    else:
        priority = None
    comment = data.get("comment")
    if comment is not None and not isinstance(comment, str):
        return _dns_validation(9100, "comment must be a string.")
    if comment is not None and len(comment) > 100:
        return _dns_validation(9100, "DNS record comment is too long (at most 100 characters).")
    tags = data.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) and _TAG.fullmatch(t) for t in tags):
        return _dns_validation(9103, "tags must be a list of 'name:value' strings.")
    settings = data.get("settings") or {}
    if not isinstance(settings, dict) or not all(
        k in _RECORD_SETTINGS and isinstance(v, bool) for k, v in settings.items()
    ):
        return _dns_validation(9104, f"settings accepts only boolean {sorted(_RECORD_SETTINGS)}.")
    others = conn.execute(
        "SELECT * FROM dns_records WHERE zone_id=? AND name=? AND id<>?", (zone["id"], name, record_id or "")
    ).fetchall()
    for other in others:
        if other["type"] == rtype and other["content"] == content:
            return api_error(400, 81058, "An identical record already exists.")
        if (rtype == "CNAME" or other["type"] == "CNAME") and (rtype in _PROXIABLE and other["type"] in _PROXIABLE):
            return api_error(400, 81053, "An A, AAAA, or CNAME record with that host already exists.")
    return {
        "type": rtype,
        "name": name,
        "content": content,
        "ttl": ttl,
        "proxied": 1 if proxied else 0,
        "priority": priority,
        "comment": comment,
        "tags": dumps(list(dict.fromkeys(tags))),
        "settings": dumps(settings),
    }


def create_record(app: SandboxApp, req: Request, p: Principal, params: dict[str, str]) -> Response:
    """``POST /zones/{zone_id}/dns_records`` (``dns.write``)."""
    data = _body(req)
    if isinstance(data, Response):
        return data
    now = app.clock.now()
    with app.store.write() as conn:
        zone = _zone(conn, p, params["zone_id"])
        if zone is None:
            return not_found(req.path)
        values = _validate_record(conn, zone, data, record_id=None)
        if isinstance(values, Response):
            return values
        record_id = uuid.uuid4().hex
        conn.execute(
            "INSERT INTO dns_records(id, zone_id, type, name, content, ttl, proxied, priority, comment, tags, settings, "
            "created_on, modified_on) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                record_id,
                zone["id"],
                values["type"],
                values["name"],
                values["content"],
                values["ttl"],
                values["proxied"],
                values["priority"],
                values["comment"],
                values["tags"],
                values["settings"],
                now,
                now,
            ),
        )
        row = conn.execute("SELECT * FROM dns_records WHERE id=?", (record_id,)).fetchone()
        view = record_view(row, zone["name"])
        record_write(
            conn, req, p, kind="dns.create", zone_id=zone["id"], record_id=record_id, now=now, body=data, after=view
        )
    return envelope(view)


def update_record(app: SandboxApp, req: Request, p: Principal, params: dict[str, str]) -> Response:
    """``PUT`` (replace) or ``PATCH`` (merge) ``/zones/{zone_id}/dns_records/{record_id}`` (``dns.write``)."""
    data = _body(req)
    if isinstance(data, Response):
        return data
    now = app.clock.now()
    with app.store.write() as conn:
        zone = _zone(conn, p, params["zone_id"])
        if zone is None:
            return not_found(req.path)
        row = conn.execute(
            "SELECT * FROM dns_records WHERE id=? AND zone_id=?", (params["record_id"], zone["id"])
        ).fetchone()
        if row is None:
            return api_error(404, 81044, "Record does not exist.")
        if req.method == "PATCH":
            merged: dict[str, Any] = {
                "type": row["type"],
                "name": row["name"],
                "content": row["content"],
                "ttl": row["ttl"],
                "proxied": bool(row["proxied"]),
                "priority": row["priority"],
                "comment": row["comment"],
                "tags": loads(row["tags"]),
                "settings": loads(row["settings"]),
            }
            merged.update(data)
        else:
            merged = data
        values = _validate_record(conn, zone, merged, record_id=row["id"])
        if isinstance(values, Response):
            return values
        conn.execute(
            "UPDATE dns_records SET type=?, name=?, content=?, ttl=?, proxied=?, priority=?, comment=?, tags=?, "
            "settings=?, modified_on=? WHERE id=?",
            (
                values["type"],
                values["name"],
                values["content"],
                values["ttl"],
                values["proxied"],
                values["priority"],
                values["comment"],
                values["tags"],
                values["settings"],
                now,
                row["id"],
            ),
        )
        before = record_view(row, zone["name"])
        row = conn.execute("SELECT * FROM dns_records WHERE id=?", (row["id"],)).fetchone()
        view = record_view(row, zone["name"])
        record_write(
            conn,
            req,
            p,
            kind="dns.update",
            zone_id=zone["id"],
            record_id=row["id"],
            now=now,
            body=data,
            before=before,
            after=view,
        )
    return envelope(view)


def delete_record(app: SandboxApp, req: Request, p: Principal, params: dict[str, str]) -> Response:
    """``DELETE /zones/{zone_id}/dns_records/{record_id}`` (``dns.write``)."""
    with app.store.write() as conn:
        zone = _zone(conn, p, params["zone_id"])
        if zone is None:
            return not_found(req.path)
        row = conn.execute(
            "SELECT * FROM dns_records WHERE id=? AND zone_id=?", (params["record_id"], zone["id"])
        ).fetchone()
        if row is None:
            return api_error(404, 81044, "Record does not exist.")
        conn.execute("DELETE FROM dns_records WHERE id=?", (row["id"],))
        record_write(
            conn,
            req,
            p,
            kind="dns.delete",
            zone_id=zone["id"],
            record_id=row["id"],
            now=app.clock.now(),
            before=record_view(row, zone["name"]),
        )
    return envelope({"id": params["record_id"]})


_PURGE_KEYS = ("purge_everything", "files", "tags", "hosts", "prefixes")


def purge_cache(app: SandboxApp, req: Request, p: Principal, params: dict[str, str]) -> Response:
    """``POST /zones/{zone_id}/purge_cache`` (``cache.purge``): exactly one purge kind per request."""
    data = _body(req)
    if isinstance(data, Response):
        return data
    keys = [k for k in _PURGE_KEYS if k in data]
    valid = len(keys) == 1 and set(data) <= set(_PURGE_KEYS)
    if valid:
        value = data[keys[0]]
        valid = value is True if keys[0] == "purge_everything" else (isinstance(value, list) and 0 < len(value) <= 30)
    if not valid:
        return api_error(
            400, 1012, 'Request must contain one of "purge_everything", "files", "tags", "hosts" or "prefixes"'
        )
    with app.store.write() as conn:
        zone = _zone(conn, p, params["zone_id"])
        if zone is None:
            return not_found(req.path)
        now = app.clock.now()
        conn.execute(
            "INSERT INTO purges(zone_id, user_id, body, at) VALUES (?,?,?,?)",
            (zone["id"], p.user_id, dumps(data), now),
        )
        record_write(conn, req, p, kind="purge", zone_id=zone["id"], now=now, body=data)
    return envelope({"id": zone["id"]})


# ------------------------------------------------------------------------------------ zone settings

_BROWSER_CACHE_TTLS = (
    0, 30, 60, 120, 300, 1200, 1800, 3600, 7200, 10800, 14400, 18000, 28800, 43200, 57600, 72000, 86400, 172800,
    259200, 345600, 432000, 691200, 1382400, 2073600, 2678400, 5356800, 16070400, 31536000,
)  # fmt: skip

#: setting id -> (default, allowed values), as the SDK's ``setting_get_response`` types list them [doc].
ZONE_SETTINGS: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "always_use_https": ("off", ("on", "off")),
    "browser_cache_ttl": (14400, _BROWSER_CACHE_TTLS),
    "cache_level": ("aggressive", ("aggressive", "basic", "simplified")),
    "development_mode": ("off", ("on", "off")),
    "min_tls_version": ("1.0", ("1.0", "1.1", "1.2", "1.3")),
    "security_level": ("medium", ("off", "essentially_off", "low", "medium", "high", "under_attack")),
    "ssl": ("full", ("off", "flexible", "full", "strict")),
}
#: Development mode switches itself off after three hours [doc].
DEVELOPMENT_MODE_SECONDS = 3 * 3600


def _setting_view(setting_id: str, stored: sqlite3.Row | None, now: float) -> dict[str, Any]:
    value = loads(stored["value"]) if stored else ZONE_SETTINGS[setting_id][0]
    modified = stored["modified_on"] if stored else None
    view: dict[str, Any] = {
        "id": setting_id,
        "value": value,
        "editable": True,
        "modified_on": iso(modified) if modified else None,
    }
    if setting_id == "development_mode":
        remaining = int(modified + DEVELOPMENT_MODE_SECONDS - now) if value == "on" and modified else 0
        if value == "on" and remaining <= 0:
            view["value"], remaining = "off", 0
        view["time_remaining"] = max(0, remaining)
    return view


def _stored_settings(conn: sqlite3.Connection, zone_id: str) -> dict[str, sqlite3.Row]:
    return {r["setting_id"]: r for r in conn.execute("SELECT * FROM zone_settings WHERE zone_id=?", (zone_id,))}


def list_zone_settings(app: SandboxApp, req: Request, p: Principal, params: dict[str, str]) -> Response:
    """``GET /zones/{zone_id}/settings`` (``zone-settings.read``): every emulated setting."""
    with app.store.read() as conn:
        zone = _zone(conn, p, params["zone_id"])
        if zone is None:
            return not_found(req.path)
        stored = _stored_settings(conn, zone["id"])
    now = app.clock.now()
    return envelope([_setting_view(sid, stored.get(sid), now) for sid in sorted(ZONE_SETTINGS)])


def _unknown_setting(setting_id: str) -> Response:
    return api_error(404, 1003, f"Invalid or missing zone setting: {setting_id}")


def get_zone_setting(app: SandboxApp, req: Request, p: Principal, params: dict[str, str]) -> Response:
    """``GET /zones/{zone_id}/settings/{setting_id}`` (``zone-settings.read``)."""
    setting_id = params["setting_id"]
    with app.store.read() as conn:
        zone = _zone(conn, p, params["zone_id"])
        if zone is None:
            return not_found(req.path)
        if setting_id not in ZONE_SETTINGS:
            return _unknown_setting(setting_id)
        stored = _stored_settings(conn, zone["id"]).get(setting_id)
    return envelope(_setting_view(setting_id, stored, app.clock.now()))


def edit_zone_setting(app: SandboxApp, req: Request, p: Principal, params: dict[str, str]) -> Response:
    """``PATCH /zones/{zone_id}/settings/{setting_id}`` (``zone-settings.write``), body ``{"value": …}``."""
    setting_id = params["setting_id"]
    data = _body(req)
    if isinstance(data, Response):
        return data
    now = app.clock.now()
    with app.store.write() as conn:
        zone = _zone(conn, p, params["zone_id"])
        if zone is None:
            return not_found(req.path)
        if setting_id not in ZONE_SETTINGS:
            return _unknown_setting(setting_id)
        allowed = ZONE_SETTINGS[setting_id][1]
        value = data.get("value")
        if set(data) != {"value"} or isinstance(value, bool) or value not in allowed:
            return api_error(
                400, 1007, f"Invalid value for zone setting {setting_id}", [{"code": 1007, "message": str(allowed)}]
            )
        before = _setting_view(setting_id, _stored_settings(conn, zone["id"]).get(setting_id), now)
        conn.execute(
            "INSERT OR REPLACE INTO zone_settings(zone_id, setting_id, value, modified_on) VALUES (?,?,?,?)",
            (zone["id"], setting_id, dumps(value), now),
        )
        after = _setting_view(setting_id, _stored_settings(conn, zone["id"])[setting_id], now)
        record_write(
            conn,
            req,
            p,
            kind="settings.edit",
            zone_id=zone["id"],
            setting_id=setting_id,
            now=now,
            body=data,
            before=before,
            after=after,
        )
    return envelope(after)


def list_scopes(app: SandboxApp, req: Request, p: Principal, params: dict[str, str]) -> Response:
    """``GET /oauth/scopes``: the scope catalogue [doc] (any valid token may read it)."""
    items = list(CATALOGUE.values())
    page = paginate(req, items, default=len(items), minimum=1, maximum=1000)
    if isinstance(page, Response):
        return page
    chunk, info = page
    return envelope(chunk, result_info=info)


# ------------------------------------------------------------------------------------------ routing


@dataclass(frozen=True)
class Route:
    """One API endpoint: method, path pattern, the scope it needs and its handler."""

    method: str
    template: str
    pattern: re.Pattern[str]
    scope: str
    handler: Handler


def _route(method: str, template: str, scope: str, handler: Handler) -> Route:
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
    return Route(method, template, re.compile(f"^{regex}$"), scope, handler)


ROUTES: tuple[Route, ...] = (
    _route("GET", "/user", "user-details.read", get_user),
    _route("GET", "/user/tokens/verify", API_TOKEN_ONLY, verify_token),
    _route("GET", "/user/tokens/permission_groups", ANY_TOKEN, list_permission_groups),
    _route("GET", "/user/tokens", "api-tokens.read", list_tokens),
    _route("GET", "/user/tokens/{token_id}", "api-tokens.read", get_token),
    _route("DELETE", "/user/tokens/{token_id}", "api-tokens.write", delete_token),
    _route("GET", "/accounts", "account-settings.read", list_accounts),
    _route("GET", "/accounts/{account_id}", "account-settings.read", get_account),
    _route("GET", "/accounts/{account_id}/tokens/verify", ACCOUNT_TOKEN_ONLY, verify_token),
    _route("GET", "/accounts/{account_id}/tokens/permission_groups", ANY_TOKEN, list_permission_groups),
    _route("GET", "/accounts/{account_id}/tokens", "account-api-tokens.read", list_tokens),
    _route("GET", "/accounts/{account_id}/tokens/{token_id}", "account-api-tokens.read", get_token),
    _route("DELETE", "/accounts/{account_id}/tokens/{token_id}", "account-api-tokens.write", delete_token),
    _route("GET", "/zones", "zone.read", list_zones),
    _route("GET", "/zones/{zone_id}", "zone.read", get_zone),
    _route("GET", "/zones/{zone_id}/dns_records", "dns.read", list_records),
    _route("POST", "/zones/{zone_id}/dns_records", "dns.write", create_record),
    _route("GET", "/zones/{zone_id}/dns_records/{record_id}", "dns.read", get_record),
    _route("PUT", "/zones/{zone_id}/dns_records/{record_id}", "dns.write", update_record),
    _route("PATCH", "/zones/{zone_id}/dns_records/{record_id}", "dns.write", update_record),
    _route("DELETE", "/zones/{zone_id}/dns_records/{record_id}", "dns.write", delete_record),
    _route("POST", "/zones/{zone_id}/purge_cache", "cache.purge", purge_cache),
    _route("GET", "/zones/{zone_id}/settings", "zone-settings.read", list_zone_settings),
    _route("GET", "/zones/{zone_id}/settings/{setting_id}", "zone-settings.read", get_zone_setting),
    _route("PATCH", "/zones/{zone_id}/settings/{setting_id}", "zone-settings.write", edit_zone_setting),
    _route("GET", "/oauth/scopes", ANY_TOKEN, list_scopes),
)


def match(req: Request) -> tuple[Route | None, dict[str, str], str]:
    """Find the route for a request; returns (route, path params, counter key)."""
    sub = req.path[len(API_PREFIX) :]
    if len(sub) > 1:
        sub = sub.rstrip("/")
    other_method = False
    for route in ROUTES:
        found = route.pattern.match(sub)
        if found:
            if route.method == req.method:
                return route, found.groupdict(), f"{req.method} {API_PREFIX}{route.template}"
            other_method = True
    key = f"{req.method} {API_PREFIX} (method not allowed)" if other_method else f"{req.method} {API_PREFIX} (no route)"
    return None, {"method_not_allowed": "1"} if other_method else {}, key


def dispatch(app: SandboxApp, req: Request, route: Route | None, params: dict[str, str]) -> Response:
    """Authenticate, rate-limit, check the scope, then run the endpoint."""
    if route is None:
        if params.get("method_not_allowed"):
            return api_error(405, 7001, f"Method {req.method} not available for that URI.")
        return api_error(404, 7000, "No route for that URI")
    header = req.headers.get("Authorization")
    if header is None:
        if req.headers.get("X-Auth-Key") or req.headers.get("X-Auth-Email"):
            return api_error(403, 9103, "Unknown X-Auth-Key or X-Auth-Email")
        return api_error(400, 9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme != "Bearer" or not token or " " in token:
        return api_error(
            400, 6003, "Invalid request headers", [{"code": 6111, "message": "Invalid format for Authorization header"}]
        )
    now = app.clock.now()
    with app.store.read() as conn:
        principal = resolve_bearer(conn, token, now)
    if route.scope in (API_TOKEN_ONLY, ACCOUNT_TOKEN_ONLY):
        refusal = _verify_refusal(app, route, params, token, principal)
        if refusal is not None:
            return refusal
    if principal is None:
        return api_error(403, 9109, "Invalid access token")
    if principal.condition and not ip_condition_met(principal.condition, req.client_ip):
        return api_error(403, 9109, f"Cannot use the access token from location: {req.client_ip}")
    if principal.kind == "api_token" and (
        principal.last_used_at is None or now - principal.last_used_at >= LAST_USED_RESOLUTION
    ):
        with app.store.write() as conn:
            conn.execute("UPDATE api_tokens SET last_used_at=? WHERE id=?", (now, principal.token_id))
    to_revoke: list[str] = []
    if principal.grant_id is not None:
        refuse, to_revoke = app.faults.count_grant_call(principal.grant_id)
        if refuse:
            app.counters.add("fault:revoke_after_calls_refused")
            return api_error(403, 9109, "Invalid access token")
    app.peaks.hit(f"user:{principal.user_id}", now)
    settings = app.settings
    limit, window = int(settings.rate_limit), int(settings.rate_window)
    allowed, remaining, reset = app.ratelimiter.hit(principal.user_id, now, limit, window)
    headers = [
        ("Ratelimit", f'"default";r={remaining};t={reset}'),
        ("Ratelimit-Policy", f'"default";q={limit};w={window}'),
    ]
    if not allowed:
        response = rate_limited(reset, int(settings.rate_limit_code))
    elif not _permitted(app, req, route, principal, params):
        response = _missing_scope(int(settings.missing_scope_code))
    else:
        response = route.handler(app, req, replace(principal, acting_scope=route.scope), params)
    if to_revoke:
        _revoke_by_fault(app, to_revoke)
    response.headers.extend(headers)
    return response


def ip_condition_met(condition: dict[str, Any], client_ip: str) -> bool:
    """A token's ``condition.request_ip``: the caller must be in one of ``in`` (when given) and in
    none of ``not_in`` [doc]."""
    request_ip = condition.get("request_ip") or {}
    address = ipaddress.ip_address(client_ip)

    def within(cidrs: list[str]) -> bool:
        return any(address in ipaddress.ip_network(c, strict=False) for c in cidrs)

    if within(request_ip.get("not_in") or []):
        return False
    allowed = request_ip.get("in") or []
    return not allowed or within(allowed)


def _permitted(app: SandboxApp, req: Request, route: Route, p: Principal, params: dict[str, str]) -> bool:
    """Whether the route's scope is granted: to an OAuth token by its grant's scopes; to an API token
    by its policies on the zone, account or user the path names (lists are filtered by the handlers
    instead). A token may always delete itself [doc]."""
    if route.scope in (ANY_TOKEN, API_TOKEN_ONLY, ACCOUNT_TOKEN_ONLY):
        return True
    if p.policies is not None and req.method == "DELETE" and params.get("token_id") == p.token_id:
        return True
    if route.scope not in p.scopes:
        return False
    if p.policies is None:
        return True
    level = at.SCOPE_LEVEL.get(route.scope)
    if level == at.USER:
        target = at.Target(at.USER, p.user_id)
    elif level == at.ACCOUNT and "account_id" in params:
        target = at.Target(at.ACCOUNT, params["account_id"])
    elif level == at.ZONE and "zone_id" in params:
        with app.store.read() as conn:
            zone = conn.execute("SELECT account_id FROM zones WHERE id=?", (params["zone_id"],)).fetchone()
        target = at.Target(at.ZONE, params["zone_id"], zone["account_id"] if zone else None)
    else:
        return True
    return p.reaches(target, route.scope)


def _missing_scope(code: int) -> Response:
    """Cloudflare documents 10000 "Authentication error"; 9109 has been seen in the wild, with the
    very answer a revoked token gets, so a client cannot tell the two apart (setting
    ``missing_scope_code``)."""
    if code == 9109:
        return api_error(403, 9109, "Invalid access token")
    return api_error(403, 10000, "Authentication error")


def _revoke_by_fault(app: SandboxApp, grant_ids: list[str]) -> None:
    """``revoke_after_calls``: end the grants as the user would from Connected applications."""
    reason = app.faults.revoke_reason
    with app.store.write() as conn:
        for grant_id in grant_ids:
            if revoke_grant(conn, grant_id, reason, app.clock.now()):
                app.counters.add("fault:revoke_after_calls")
