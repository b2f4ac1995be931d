"""The sandbox-only control endpoint under ``/__sandbox__/`` (404 unless enabled).

Tests and benchmarks use it to change settings, inject faults, read ground truth (each grant's
current refresh-token hash, reuse counts, calls per endpoint, revocations) and act as parties the
portal cannot drive itself (the user revoking an app, an account admin switching off OAuth access,
the client's owner deleting it). Nothing here exists at Cloudflare.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from . import api_tokens as at
from . import seed as seeding
from .api import token_view
from .grants import list_grants, load_client, revoke_grant
from .runtime import SettingsError
from .scopes import REGISTRABLE, is_dot_style
from .store import dumps, loads
from .tokens import new_access_token, new_api_token, new_refresh_token, sha256_hex
from .ui import set_oauth_access
from .web import Request, Response, json_response

if TYPE_CHECKING:
    from .server import SandboxApp

PREFIX = "/__sandbox__"
MAX_MINT = 100_000


class ControlError(Exception):
    """A bad control request: answered as 400 (or the given status) with ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _ok(payload: Any, status: int = 200) -> Response:
    return json_response(status, payload, [("Cache-Control", "no-store")])


def _body(req: Request) -> dict[str, Any]:
    try:
        data = req.json()
    except ValueError as exc:
        raise ControlError("the body must be JSON") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ControlError("the body must be a JSON object")
    return data


def _str_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ControlError(f"{name} must be a list of strings")
    return list(value)


def handle(app: SandboxApp, req: Request) -> Response:
    """Dispatch one control request."""
    parts = [unquote(p) for p in req.path[len(PREFIX) :].strip("/").split("/") if p]
    method = req.method
    app.counters.add(f"{method} {PREFIX}/{parts[0] if parts else ''}")
    try:
        return _dispatch(app, req, method, parts)
    except (ControlError, SettingsError) as exc:
        status = exc.status if isinstance(exc, ControlError) else 400
        return json_response(status, {"error": str(exc)})


def _dispatch(app: SandboxApp, req: Request, method: str, parts: list[str]) -> Response:
    head = parts[0] if parts else ""
    rest = parts[1:]
    if head == "settings" and not rest:
        if method == "GET":
            return _ok(app.settings.snapshot())
        if method == "POST":
            before = app.settings.snapshot()
            after = app.settings.update(_body(req))
            if (before["rate_limit"], before["rate_window"]) != (after["rate_limit"], after["rate_window"]):
                app.ratelimiter.reset()
            return _ok(after)
        if method == "DELETE":
            app.ratelimiter.reset()
            return _ok(app.settings.reset())
    if head == "faults" and not rest:
        if method == "GET":
            return _ok(app.faults.snapshot())
        if method == "POST":
            return _ok(app.faults.configure(_body(req)))
        if method == "DELETE":
            return _ok(app.faults.clear())
    if head == "state" and not rest and method == "GET":
        return _ok(_state(app, req))
    if head == "grants":
        if not rest and method == "POST":
            return _ok(_mint(app, _body(req)))
        if not rest and method == "GET":
            return _ok(_state(app, req)["grants"])
        if len(rest) == 1 and method == "GET":
            return _ok(_grant(app, rest[0]))
        if len(rest) == 2 and rest[1] == "revoke" and method == "POST":
            reason = _body(req).get("reason", "user")
            if not isinstance(reason, str) or not reason:
                raise ControlError("reason must be a non-empty string")
            with app.store.write() as conn:
                if conn.execute("SELECT 1 FROM grants WHERE id=?", (rest[0],)).fetchone() is None:
                    raise ControlError("unknown grant", 404)
                revoke_grant(conn, rest[0], reason, app.clock.now())
            return _ok(_grant(app, rest[0]))
    if head == "reset-counters" and not rest and method == "POST":
        app.counters.reset()
        app.ratelimiter.reset()
        app.peaks.reset()
        with app.store.write() as conn:
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('reuse_total', '0')")
        return _ok({"ok": True})
    if head == "reset" and not rest and method == "POST":
        app.reset()
        return _ok({"ok": True})
    if head == "clients":
        if not rest and method == "GET":
            return _ok(_clients(app))
        if not rest and method == "POST":
            return _ok(_register_client(app, _body(req)))
        if len(rest) == 1 and method == "DELETE":
            return _ok(_delete_client(app, rest[0]))
    if head == "accounts" and len(rest) == 2 and rest[1] == "oauth-access" and method == "POST":
        enabled = _body(req).get("enabled")
        if not isinstance(enabled, bool):
            raise ControlError("enabled must be true or false")
        if not set_oauth_access(app, rest[0], enabled):
            raise ControlError("unknown account", 404)
        return _ok({"account_id": rest[0], "oauth_app_access": enabled})
    if head == "api-tokens":
        if not rest and method == "POST":
            return _ok(_create_api_token(app, _body(req)))
        if not rest and method == "GET":
            return _ok(_api_tokens(app))
        if len(rest) == 1 and method == "DELETE":
            with app.store.write() as conn:
                if not conn.execute("DELETE FROM api_tokens WHERE id=?", (rest[0],)).rowcount:
                    raise ControlError("unknown API token", 404)
            return _ok({"id": rest[0], "deleted": True})
    if head == "users" and not rest and method == "POST":
        return _ok(_create_user(app, _body(req)))
    if head == "clock" and not rest:
        if method == "POST":
            data = _body(req)
            if "offset" in data:
                offset = data["offset"]
                if isinstance(offset, bool) or not isinstance(offset, (int, float)):
                    raise ControlError("offset must be a number of seconds")
                app.clock.offset = float(offset)
            elif "advance" in data:
                advance = data["advance"]
                if isinstance(advance, bool) or not isinstance(advance, (int, float)):
                    raise ControlError("advance must be a number of seconds")
                app.clock.offset += float(advance)
            else:
                raise ControlError("send {'advance': seconds} or {'offset': seconds}")
        if method in ("GET", "POST"):
            return _ok({"offset": app.clock.offset, "now": app.clock.now()})
    if head == "purges" and not rest and method == "GET":
        with app.store.read() as conn:
            rows = conn.execute("SELECT zone_id, user_id, body, at FROM purges ORDER BY id").fetchall()
        return _ok(
            [{"zone_id": r["zone_id"], "user_id": r["user_id"], "body": loads(r["body"]), "at": r["at"]} for r in rows]
        )
    if head == "writes" and not rest and method == "GET":
        return _ok(_writes(app, req))
    raise ControlError("no such control endpoint", 404)


_WRITE_FILTERS = ("kind", "zone_id", "record_id", "setting_id", "grant_id", "api_token_id", "token_sha256", "user_id")


def _writes(app: SandboxApp, req: Request) -> list[dict[str, Any]]:
    """Every change of Cloudflare data, oldest first, with the grant and token that made it."""
    clauses: list[str] = []
    params: list[Any] = []
    for name in _WRITE_FILTERS:
        value = req.arg(name)
        if value:
            clauses.append(f"{name}=?")
            params.append(value)
    since = req.arg("since_id")
    if since:
        if not since.isdigit():
            raise ControlError("since_id must be an integer")
        clauses.append("id>?")
        params.append(int(since))
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    with app.store.read() as conn:
        rows = conn.execute(f"SELECT * FROM writes {where} ORDER BY id", tuple(params)).fetchall()  # noqa: S608
    return [
        {
            "id": r["id"],
            "kind": r["kind"],
            "zone_id": r["zone_id"],
            "record_id": r["record_id"],
            "setting_id": r["setting_id"],
            "grant_id": r["grant_id"],
            "api_token_id": r["api_token_id"],
            "token_sha256": r["token_sha256"],
            "user_id": r["user_id"],
            "method": r["method"],
            "path": r["path"],
            "body": loads(r["body"]),
            "before": loads(r["before"]),
            "after": loads(r["after"]),
            "at": r["at"],
        }
        for r in rows
    ]


# -------------------------------------------------------------------------------------- ground truth


def _state(app: SandboxApp, req: Request) -> dict[str, Any]:
    clauses: list[str] = []
    params: list[Any] = []
    for name, column in (("client_id", "g.client_id"), ("status", "g.status"), ("user_id", "g.user_id")):
        value = req.arg(name)
        if value:
            clauses.append(f"{column}=?")
            params.append(value)
    email = req.arg("user_email")
    if email:
        clauses.append("g.user_id=?")
        params.append(seeding.user_id(email))
    token_hash = req.arg("token_sha256")
    if token_hash:
        clauses.append(
            "g.id IN (SELECT grant_id FROM refresh_tokens WHERE token_hash=? "
            "UNION SELECT grant_id FROM access_tokens WHERE token_hash=?)"
        )
        params.extend([token_hash, token_hash])
    with app.store.read() as conn:
        grants = list_grants(conn, " AND ".join(clauses), tuple(params))
        reuse = conn.execute("SELECT value FROM meta WHERE key='reuse_total'").fetchone()
        accounts = conn.execute("SELECT id, name, oauth_disabled_at FROM accounts ORDER BY name").fetchall()
    return {
        "grants": grants,
        "reuse_count": int(reuse["value"]) if reuse else 0,
        "calls": app.counters.snapshot(),
        "peaks": app.peaks.snapshot(),
        "accounts": [
            {"id": a["id"], "name": a["name"], "oauth_app_access": a["oauth_disabled_at"] is None} for a in accounts
        ],
        "settings": app.settings.snapshot(),
        "faults": app.faults.snapshot(),
        "clock_offset": app.clock.offset,
    }


def _grant(app: SandboxApp, grant_id: str) -> dict[str, Any]:
    with app.store.read() as conn:
        found = list_grants(conn, "g.id=?", (grant_id,))
    if not found:
        raise ControlError("unknown grant", 404)
    return found[0]


def _clients(app: SandboxApp) -> list[dict[str, Any]]:
    with app.store.read() as conn:
        rows = conn.execute("SELECT * FROM clients ORDER BY created_at, client_id").fetchall()
    return [
        {
            "client_id": r["client_id"],
            "name": r["name"],
            "redirect_uris": loads(r["redirect_uris"]),
            "scopes": loads(r["scopes"]),
            "optional_scopes": loads(r["optional_scopes"]),
            "visibility": r["visibility"],
            "publisher_domain": r["publisher_domain"],
            "domain_verified": bool(r["domain_verified"]),
            "owner_account_id": r["owner_account_id"],
            "token_endpoint_auth_method": r["token_endpoint_auth_method"],
            "deleted": r["deleted_at"] is not None,
        }
        for r in rows
    ]


# ------------------------------------------------------------------------------------------ mutations


def _check_scopes(values: list[str], name: str) -> list[str]:
    bad = [s for s in values if not is_dot_style(s) or s not in REGISTRABLE]
    if bad:
        raise ControlError(f"{name}: unknown or colon-style scopes {bad}")
    return list(dict.fromkeys(values))


def _register_client(app: SandboxApp, data: dict[str, Any]) -> dict[str, Any]:
    client_id = data.get("client_id") or str(uuid.uuid4())
    if not isinstance(client_id, str) or not re.fullmatch(r"[A-Za-z0-9._~\-]{1,128}", client_id):
        raise ControlError("client_id must be 1-128 URL-safe characters")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ControlError("name is required")
    redirect_uris = _str_list(data.get("redirect_uris"), "redirect_uris")
    if not redirect_uris:
        raise ControlError("redirect_uris must not be empty")
    for uri in redirect_uris:
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
            raise ControlError(f"redirect URI {uri!r} must be an absolute http(s) URI without a fragment")
    scopes = _check_scopes(_str_list(data.get("scopes", []), "scopes"), "scopes")
    optional = _check_scopes(_str_list(data.get("optional_scopes", []), "optional_scopes"), "optional_scopes")
    visibility = data.get("visibility", "public")
    if visibility not in ("public", "private"):
        raise ControlError("visibility must be 'public' or 'private'")
    method = data.get("token_endpoint_auth_method")
    if method not in (None, "client_secret_basic", "client_secret_post"):
        raise ControlError("token_endpoint_auth_method must be client_secret_basic or client_secret_post")
    secret = data.get("client_secret")
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise ControlError("client_secret must be a non-empty string")
    with app.store.write() as conn:
        exists = conn.execute("SELECT 1 FROM clients WHERE client_id=?", (client_id,)).fetchone() is not None
        if secret is None and not exists:
            secret = secrets.token_urlsafe(32)
        seeding.upsert_client(
            conn,
            client_id=client_id,
            client_secret=secret,
            name=name.strip(),
            redirect_uris=redirect_uris,
            scopes=scopes,
            optional_scopes=[s for s in optional if s not in scopes],
            visibility=visibility,
            publisher_domain=data.get("publisher_domain"),
            domain_verified=bool(data.get("domain_verified", False)),
            owner_account_id=data.get("owner_account_id") or seeding.EXAMPLE_AGENCY_ID,
            logo_uri=data.get("logo_uri"),
            token_endpoint_auth_method=method,
            now=app.clock.now(),
        )
    return {"client_id": client_id, "client_secret": secret, "created": not exists}


def _delete_client(app: SandboxApp, client_id: str) -> dict[str, Any]:
    now = app.clock.now()
    with app.store.write() as conn:
        if load_client(conn, client_id) is None:
            raise ControlError("unknown client", 404)
        conn.execute("UPDATE clients SET deleted_at=? WHERE client_id=?", (now, client_id))
        ids = [
            r["id"] for r in conn.execute("SELECT id FROM grants WHERE client_id=? AND status='active'", (client_id,))
        ]
        for grant_id in ids:
            revoke_grant(conn, grant_id, "client_deleted", now)
    return {"client_id": client_id, "deleted": True, "revoked_grants": len(ids)}


def _user_account_ids(conn: Any, uid: str) -> set[str]:
    return {r["account_id"] for r in conn.execute("SELECT account_id FROM memberships WHERE user_id=?", (uid,))}


def _accounts_arg(value: Any, member_of: set[str]) -> list[str] | str:
    if value in (None, "all"):
        return "all"
    accounts = _str_list(value, "accounts")
    if not accounts:
        raise ControlError("accounts must be 'all' or a non-empty list of account ids")
    unknown = [a for a in accounts if a not in member_of]
    if unknown:
        raise ControlError(f"the user is not a member of {unknown}")
    return list(dict.fromkeys(accounts))


def _mint(app: SandboxApp, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Create grants with tokens directly (no browser, one transaction: fast for 10,000 grants)."""
    count = data.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_MINT:
        raise ControlError(f"count must be between 1 and {MAX_MINT}")
    client_id = data.get("client_id", seeding.DEMO_CLIENT_ID)
    email = data.get("user_email", seeding.ALICE_EMAIL)
    now = app.clock.now()
    settings = app.settings
    access_ttl = int(settings.access_ttl)
    refresh_ttl = int(settings.refresh_ttl)
    results: list[dict[str, Any]] = []
    with app.store.write() as conn:
        client = load_client(conn, client_id)
        if client is None:
            raise ControlError("unknown client", 404)
        user = conn.execute("SELECT id FROM users WHERE email=?", (str(email).lower(),)).fetchone()
        if user is None:
            raise ControlError("unknown user", 404)
        allowed = set(loads(client["scopes"])) | set(loads(client["optional_scopes"]))
        raw_scopes = data.get("scopes")
        if raw_scopes is None:
            scopes = loads(client["scopes"])
        elif isinstance(raw_scopes, str):
            scopes = raw_scopes.split()
        else:
            scopes = _str_list(raw_scopes, "scopes")
        bad = [s for s in scopes if s not in allowed]
        if bad:
            raise ControlError(f"scopes not registered for the client: {bad}")
        accounts = _accounts_arg(data.get("accounts"), _user_account_ids(conn, user["id"]))
        with_refresh = "offline_access" in scopes
        scope_text = " ".join(scopes)
        scopes_json, accounts_json = dumps(scopes), dumps(accounts)
        grant_rows, access_rows, refresh_rows = [], [], []
        for _ in range(count):
            grant_id = str(uuid.uuid4())
            access = new_access_token()
            refresh = new_refresh_token() if with_refresh else None
            refresh_hash = sha256_hex(refresh) if refresh else None
            grant_rows.append((grant_id, client_id, user["id"], scopes_json, accounts_json, refresh_hash, now))
            access_rows.append((sha256_hex(access), grant_id, now, now + access_ttl))
            if refresh_hash:
                refresh_rows.append((refresh_hash, grant_id, now, now + refresh_ttl if refresh_ttl else None))
            results.append(
                {
                    "grant_id": grant_id,
                    "access_token": access,
                    "refresh_token": refresh,
                    "expires_in": access_ttl,
                    "scope": scope_text,
                }
            )
        conn.executemany(
            "INSERT INTO grants(id, client_id, user_id, scopes, accounts, status, current_refresh_hash, created_at) "
            "VALUES (?,?,?,?,?,'active',?,?)",
            grant_rows,
        )
        conn.executemany(
            "INSERT INTO access_tokens(token_hash, grant_id, created_at, expires_at, revoked) VALUES (?,?,?,?,0)",
            access_rows,
        )
        conn.executemany(
            "INSERT INTO refresh_tokens(token_hash, grant_id, status, created_at, expires_at) "
            "VALUES (?,?,'current',?,?)",
            refresh_rows,
        )
    return results


def _create_api_token(app: SandboxApp, data: dict[str, Any]) -> dict[str, Any]:
    """An API token with Cloudflare's policies: user-owned (``cfut_``, ``user_email``) or
    account-owned (``cfat_``, ``account_id``).

    1. ``policies`` (``[{"effect", "permission_groups": [names or ids], "resources": {...}}]``) are
       taken as given; the shorthand ``permissions`` (+ ``zones`` or ``accounts``) builds one allow
       policy per resource level, as the dashboard does.
    2. Every group must exist and find a resource of its level in its policy; every resource must be
       the owner's (the user's accounts and their zones, or the owning account). Nothing is stored
       on a bad request.
    3. ``status``, ``expires_in`` / ``not_before_in`` (seconds from now) and ``condition`` are stored
       as given.
    """
    account_id = data.get("account_id")
    status = data.get("status", "active")
    if status not in ("active", "disabled", "expired"):
        raise ControlError("status must be active, disabled or expired")
    times = {}
    for key in ("expires_in", "not_before_in"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ControlError(f"{key} must be an integer number of seconds")
        times[key] = value
    condition = data.get("condition")
    if condition is not None:
        _check_condition(condition)
    now = app.clock.now()
    with app.store.write() as conn:
        if account_id is not None:
            if conn.execute("SELECT 1 FROM accounts WHERE id=?", (account_id,)).fetchone() is None:
                raise ControlError("unknown account", 404)
            user_id, member_of = f"account:{account_id}", {str(account_id)}
        else:
            email = str(data.get("user_email", seeding.ALICE_EMAIL)).lower()
            user = conn.execute("SELECT id FROM users WHERE email=?", (email,)).fetchone()
            if user is None:
                raise ControlError("unknown user", 404)
            user_id, member_of = user["id"], _user_account_ids(conn, user["id"])
        if "policies" in data:
            policies = [_policy(conn, p, user_id, member_of, account_id) for p in _policy_list(data["policies"])]
        else:
            policies = _shorthand_policies(conn, data, user_id, member_of, account_id)
        scopes = sorted(at.policies_scopes(policies))
        token = new_api_token() if account_id is None else at.new_account_token()
        token_id = uuid.uuid4().hex
        conn.execute(
            "INSERT INTO api_tokens(id, token_hash, user_id, name, scopes, accounts, status, created_at, expires_at, "
            "policies, owner_account_id, not_before, modified_at, condition) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                token_id,
                sha256_hex(token),
                user_id,
                str(data.get("name", "API token")),
                dumps(scopes),
                dumps(sorted(member_of)),
                status,
                now,
                now + times["expires_in"] if times["expires_in"] is not None else None,
                dumps(policies),
                account_id,
                now + times["not_before_in"] if times["not_before_in"] is not None else None,
                now,
                dumps(condition) if condition is not None else None,
            ),
        )
    accounts = _shorthand_accounts(data)
    return {
        "id": token_id,
        "token": token,
        "status": status,
        "scopes": scopes,
        "accounts": accounts,
        "policies": policies,
        "owner_account_id": account_id,
    }


def _check_condition(condition: Any) -> None:
    """``{"request_ip": {"in": [cidr…], "not_in": [cidr…]}}``, each CIDR valid."""
    request_ip = condition.get("request_ip") if isinstance(condition, dict) else None
    if not isinstance(request_ip, dict) or not set(request_ip) <= {"in", "not_in"}:
        raise ControlError('condition must be {"request_ip": {"in": [...], "not_in": [...]}}')
    for key, cidrs in request_ip.items():
        for cidr in _str_list(cidrs, f"condition.request_ip.{key}"):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ControlError(f"bad CIDR {cidr!r} in condition.request_ip.{key}") from exc


def _shorthand_accounts(data: dict[str, Any]) -> list[str] | str:
    value = data.get("accounts")
    return "all" if value in (None, "all") else list(value)


def _groups(values: Any) -> list[at.PermissionGroup]:
    groups = []
    for value in _str_list(values, "permissions"):
        group = at.find_group(value)
        if group is None:
            raise ControlError(f"unknown permission {value!r}")
        groups.append(group)
    return groups


def _shorthand_policies(
    conn: Any, data: dict[str, Any], user_id: str, member_of: set[str], owner: str | None
) -> list[dict[str, Any]]:
    """``permissions`` over ``zones`` (zone ids) or ``accounts`` (default: all of the owner's)."""
    groups = _groups(data.get("permissions", []))
    accounts = _accounts_arg(data.get("accounts"), member_of)
    if owner is not None:
        accounts = [owner]
    zones = data.get("zones")
    if zones is not None:
        zones = _str_list(zones, "zones")
        _check_zones(conn, zones, member_of)
    if owner is not None and any(g.level == at.USER for g in groups):
        raise ControlError("an account-owned token cannot hold user permissions")
    return at.dashboard_policies(groups, user_id=user_id, accounts=accounts, zones=zones)


def _policy_list(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value or not all(isinstance(p, dict) for p in value):
        raise ControlError("policies must be a non-empty list of objects")
    return value


def _check_zones(conn: Any, zones: list[str], member_of: set[str]) -> None:
    for zone_id in zones:
        row = conn.execute("SELECT account_id FROM zones WHERE id=?", (zone_id,)).fetchone()
        if row is None or row["account_id"] not in member_of:
            raise ControlError(f"zone {zone_id} is not in the owner's accounts")


def _policy(conn: Any, data: dict[str, Any], user_id: str, member_of: set[str], owner: str | None) -> dict[str, Any]:
    """One policy from a control request, checked against Cloudflare's rules (step 2 above)."""
    effect = data.get("effect", "allow")
    if effect not in ("allow", "deny"):
        raise ControlError("effect must be allow or deny")
    raw_groups = data.get("permission_groups")
    if isinstance(raw_groups, list):
        raw_groups = [g.get("id") or g.get("name") if isinstance(g, dict) else g for g in raw_groups]
    groups = _groups(raw_groups)
    if not groups:
        raise ControlError("a policy needs at least one permission group")
    resources = data.get("resources")
    if not isinstance(resources, dict) or not resources:
        raise ControlError("resources must be a non-empty object")
    levels: set[str] = set()
    for key, value in resources.items():
        levels |= _check_resource(conn, str(key), value, user_id, member_of, owner)
    for group in groups:
        if group.level not in levels:
            raise ControlError(f"{group.name} needs a {group.level} resource in its policy")
    return at.policy_view(effect, groups, resources)


def _check_resource(conn: Any, key: str, value: Any, user_id: str, member_of: set[str], owner: str | None) -> set[str]:
    """The resource levels a key provides; raises for a resource outside the owner's reach."""
    zone_prefix, account_prefix, user_prefix = f"{at.ZONE}.", f"{at.ACCOUNT}.", f"{at.USER}."
    if key.startswith(zone_prefix) and value == "*":
        zone_id = key[len(zone_prefix) :]
        if zone_id != "*":
            _check_zones(conn, [zone_id], member_of)
        return {at.ZONE}
    if key.startswith(account_prefix):
        account_id = key[len(account_prefix) :]
        if account_id != "*" and account_id not in member_of:
            raise ControlError(f"account {account_id} is not the owner's")
        if value == "*":
            return {at.ACCOUNT}
        if isinstance(value, dict) and value:
            for zone_key, zone_value in value.items():
                if not str(zone_key).startswith(zone_prefix) or zone_value != "*":
                    raise ControlError(f"bad zone resource {zone_key!r} under {key}")
                if zone_key != f"{at.ZONE}.*":
                    _check_zones(conn, [str(zone_key)[len(zone_prefix) :]], member_of)
            return {at.ZONE}
    if key.startswith(user_prefix) and value == "*" and owner is None and key[len(user_prefix) :] in (user_id, "*"):
        return {at.USER}
    raise ControlError(f"bad resource {key!r}")


def _api_tokens(app: SandboxApp) -> list[dict[str, Any]]:
    """Ground truth: every API token (never the secret), with its owner and policies."""
    with app.store.read() as conn:
        rows = conn.execute("SELECT * FROM api_tokens ORDER BY created_at, id").fetchall()
    now = app.clock.now()
    return [{**token_view(r, now), "user_id": r["user_id"], "owner_account_id": r["owner_account_id"]} for r in rows]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "account"


def _create_user(app: SandboxApp, data: dict[str, Any]) -> dict[str, Any]:
    """Add a user, new accounts with N zones each, and memberships of existing accounts."""
    email = data.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise ControlError("email is required")
    accounts_spec = data.get("accounts", [])
    if not isinstance(accounts_spec, list):
        raise ControlError("accounts must be a list of {name, zones}")
    member_of = _str_list(data.get("member_of", []), "member_of")
    now = app.clock.now()
    created: list[dict[str, Any]] = []
    with app.store.write() as conn:
        uid = seeding.insert_user(
            conn,
            email,
            password=str(data.get("password", seeding.SANDBOX_PASSWORD)),
            first_name=str(data.get("first_name", "")),
            last_name=str(data.get("last_name", "")),
            created_on=now,
        )
        for spec in accounts_spec:
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
                raise ControlError("each account needs a name")
            name = spec["name"]
            aid = seeding.account_id(name)
            existed = conn.execute("SELECT 1 FROM accounts WHERE id=?", (aid,)).fetchone() is not None
            seeding.insert_account(conn, name, created_on=now)
            seeding.add_membership(conn, uid, aid)
            zones_spec = spec.get("zones", 0)
            if isinstance(zones_spec, int) and not isinstance(zones_spec, bool):
                zone_names = [f"{_slug(name)}-{i:03d}.com" for i in range(1, zones_spec + 1)] if not existed else []
            else:
                zone_names = _str_list(zones_spec, "zones")
            zones = []
            for offset, zone_name in enumerate(zone_names):
                if conn.execute("SELECT 1 FROM zones WHERE name=?", (zone_name.lower(),)).fetchone():
                    raise ControlError(f"zone {zone_name} already exists", 409)
                zid = seeding.insert_zone(conn, zone_name, aid, created_on=now + offset, host_number=offset)
                zones.append({"id": zid, "name": zone_name.lower()})
            if spec.get("oauth_app_access") is False:
                conn.execute("UPDATE accounts SET oauth_disabled_at=? WHERE id=?", (now, aid))
            created.append({"id": aid, "name": name, "zones": zones})
        for aid in member_of:
            if conn.execute("SELECT 1 FROM accounts WHERE id=?", (aid,)).fetchone() is None:
                raise ControlError(f"unknown account {aid}", 404)
            seeding.add_membership(conn, uid, aid)
    return {"id": uid, "email": email.lower(), "accounts": created, "member_of": member_of}
