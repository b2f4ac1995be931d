"""The OAuth 2.0 server: authorize (login + consent), token, revoke, userinfo, discovery.

It follows Ory Hydra 2.x, which Cloudflare runs: paths ``/oauth2/auth``, ``/oauth2/token``,
``/oauth2/revoke``, ``/oauth2/userinfo`` [doc]; RFC 6749 error JSON; single-use, rotating refresh
tokens whose reuse kills the whole chain [cf-code]; ``invalid_scope`` as a 303 redirect [3p]. What
Cloudflare leaves undocumented is a runtime setting (see ``runtime.DEFAULT_SETTINGS``).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import sqlite3
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, unquote_plus, urlencode, urlsplit, urlunsplit

from . import pages
from .api import resolve_bearer
from .grants import create_grant, issue_tokens, load_client, revoke_grant, wants_refresh
from .scopes import CATALOGUE, REGISTRABLE, is_dot_style, scope_name
from .store import dumps, loads
from .tokens import new_code, pkce_s256, same_secret, sha256_hex
from .ui import csrf_ok, current_session, login_redirect, user_accounts
from .web import JSON_TYPE, Request, Response, html_response, json_response, redirect

if TYPE_CHECKING:
    from .server import SandboxApp

_PKCE_RE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
AUTH_REQUEST_TTL = 1800

_NO_STORE = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]

_INVALID_GRANT = (
    "The provided authorization grant (e.g., authorization code, resource owner credentials) or refresh token "
    "is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was "
    "issued to another client."
)
_INVALID_CLIENT = (
    "Client authentication failed (e.g., unknown client, no client authentication included, or unsupported "
    "authentication method)."
)


# --------------------------------------------------------------------------------------------- errors


def oauth_error(status: int, error: str, description: str, headers: list[tuple[str, str]] | None = None) -> Response:
    """RFC 6749 §5.2 error body, never cached."""
    return json_response(status, {"error": error, "error_description": description}, [*_NO_STORE, *(headers or [])])


def invalid_grant(app: SandboxApp, detail: str) -> Response:
    """``invalid_grant`` with the configured status (400 observed, 401 per Wrangler's comments [cf-code])."""
    return oauth_error(app.settings.invalid_grant_status, "invalid_grant", f"{_INVALID_GRANT} {detail}")


def invalid_client(detail: str = "") -> Response:
    """``invalid_client``: 401 with ``WWW-Authenticate: Basic`` (RFC 6749 §5.2)."""
    return oauth_error(
        401,
        "invalid_client",
        f"{_INVALID_CLIENT} {detail}".strip(),
        [("WWW-Authenticate", 'Basic realm="oauth2"')],
    )


# ---------------------------------------------------------------------------------------- authorize


def _raw_params(raw_query: str) -> dict[str, list[str]]:
    """Query parameters with values still percent-encoded (so ``+`` handling can be chosen)."""
    params: dict[str, list[str]] = {}
    for part in raw_query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        params.setdefault(unquote_plus(key), []).append(value)
    return params


def callback_url(app: SandboxApp, redirect_uri: str, params: list[tuple[str, str]]) -> str:
    """The registered redirect URI plus response parameters (spaces as ``%20``, RFC 9207 ``iss``)."""
    params = [(k, v) for k, v in params if v is not None]
    if app.settings.send_iss:
        params.append(("iss", app.issuer))
    parts = urlsplit(redirect_uri)
    query = urlencode(params, quote_via=quote, safe="")
    return urlunsplit(parts._replace(query=f"{parts.query}&{query}" if parts.query else query))


def _error_redirect(app: SandboxApp, redirect_uri: str, error: str, description: str, state: str | None) -> Response:
    return redirect(
        callback_url(app, redirect_uri, [("error", error), ("error_description", description), ("state", state)])
    )


def _error_page(status: int, title: str, message: str) -> Response:
    return html_response(status, pages.error_page(title, message))


def authorize(app: SandboxApp, req: Request) -> Response:
    """``GET /oauth2/auth``: validate, require login, then show the consent page.

    Errors that cannot be trusted to reach the client (unknown client, unregistered redirect URI)
    are shown as a page and never redirected (RFC 6749 §4.1.2.1); the others go back to the
    redirect URI as ``error=…`` with a 303, as Cloudflare does for ``invalid_scope`` [3p].
    """
    raw = _raw_params(req.raw_query)

    def single(name: str) -> str | None:
        values = raw.get(name)
        return unquote_plus(values[0]) if values else None

    for name in ("client_id", "redirect_uri"):
        if len(raw.get(name, [])) > 1:
            return _error_page(400, "Invalid request", f"The parameter {name} was given more than once.")
    client_id = single("client_id")
    with app.store.read() as conn:
        client = load_client(conn, client_id)
    if client is None:
        return _error_page(400, "Invalid client", "The OAuth client is unknown or has been deleted.")
    registered = loads(client["redirect_uris"])
    redirect_uri = single("redirect_uri")
    redirect_in_request = redirect_uri is not None
    if redirect_uri is None:
        if len(registered) != 1:
            return _error_page(400, "Invalid request", "The redirect_uri parameter is required for this client.")
        redirect_uri = registered[0]
    elif redirect_uri not in registered:
        return _error_page(
            400, "Invalid redirect URI", "The redirect_uri does not exactly match any URI registered for this client."
        )

    state = single("state")
    for name in ("response_type", "scope", "state", "code_challenge", "code_challenge_method"):
        if len(raw.get(name, [])) > 1:
            return _error_redirect(
                app, redirect_uri, "invalid_request", f"The parameter {name} was given more than once.", state
            )
    if single("response_type") != "code":
        return _error_redirect(
            app, redirect_uri, "unsupported_response_type", "Only response_type=code is supported.", state
        )
    min_state = int(app.settings.min_state_length)
    if min_state and len(state or "") < min_state:
        return _error_redirect(
            app,
            redirect_uri,
            "invalid_state",
            f"The state is missing or has fewer than {min_state} characters and is therefore considered too weak.",
            state,
        )

    scope_values = raw.get("scope", [])
    if app.settings.scope_plus == "literal":
        scope_text = unquote(scope_values[0]) if scope_values else ""
    else:
        scope_text = unquote_plus(scope_values[0]) if scope_values else ""
    requested = [s for s in scope_text.split(" ") if s]
    allowed = set(loads(client["scopes"])) | set(loads(client["optional_scopes"]))
    bad = [s for s in requested if not is_dot_style(s) or s not in allowed or s not in REGISTRABLE]
    if bad:
        return _error_redirect(
            app,
            redirect_uri,
            "invalid_scope",
            f"The requested scope is invalid, unknown, or malformed. The OAuth 2.0 Client is not allowed to request "
            f"scope '{bad[0]}'.",
            state,
        )

    challenge = single("code_challenge")
    method = single("code_challenge_method")
    if challenge is None:
        if app.settings.require_pkce:
            return _error_redirect(
                app, redirect_uri, "invalid_request", "PKCE is required: send code_challenge with method S256.", state
            )
        method = None
    else:
        method = method or "plain"
        if method != "S256":
            return _error_redirect(
                app,
                redirect_uri,
                "invalid_request",
                "The code_challenge_method is not supported; use S256 (plain is not allowed).",
                state,
            )
        if not _PKCE_RE.match(challenge):
            return _error_redirect(app, redirect_uri, "invalid_request", "The code_challenge is malformed.", state)

    session = current_session(app, req)
    if session is None:
        return login_redirect(req)

    if client["visibility"] != "public":
        member_of = {a["id"] for a in user_accounts(app, session.user_id)}
        if client["owner_account_id"] not in member_of:
            return _error_redirect(
                app,
                redirect_uri,
                "unauthorized_client",
                "This application is private: only members of the account that owns it can authorize it.",
                state,
            )

    request_id = secrets.token_urlsafe(24)
    with app.store.write() as conn:
        conn.execute(
            "INSERT INTO auth_requests(id, session_hash, client_id, redirect_uri, redirect_uri_in_request, scopes, "
            "state, code_challenge, code_challenge_method, created_at, used) VALUES (?,?,?,?,?,?,?,?,?,?,0)",
            (
                request_id,
                session.id_hash,
                client["client_id"],
                redirect_uri,
                1 if redirect_in_request else 0,
                dumps(requested),
                state,
                challenge,
                method,
                app.clock.now(),
            ),
        )
    return _render_consent(app, client, session, request_id, requested)


def _render_consent(
    app: SandboxApp,
    client: sqlite3.Row,
    session: Any,
    request_id: str,
    requested: list[str],
    *,
    error: str | None = None,
    status: int = 200,
) -> Response:
    required_ids = set(loads(client["scopes"]))
    required = [(s, scope_name(s)) for s in requested if s in required_ids]
    optional = [(s, scope_name(s)) for s in requested if s not in required_ids]
    accounts = [(a["id"], a["name"], a["oauth_app_access"]) for a in user_accounts(app, session.user_id)]
    return html_response(
        status,
        pages.consent_page(
            client=client,
            user_email=session.email,
            auth_request_id=request_id,
            csrf_token=session.csrf_token,
            required_scopes=required,
            optional_scopes=optional,
            accounts=accounts,
            error=error,
        ),
    )


def consent(app: SandboxApp, req: Request) -> Response:
    """``POST /oauth2/consent``: Authorize or Deny the pending authorization of this session."""
    session = current_session(app, req)
    if session is None:
        return _error_page(403, "Not signed in", "Your session has ended. Start the authorization again.")
    if not csrf_ok(session, req.form_value("csrf_token")):
        return _error_page(403, "Forbidden", "The consent form is not valid for this session.")
    request_id = req.form_value("auth_request") or ""
    now = app.clock.now()
    with app.store.read() as conn:
        pending = conn.execute("SELECT * FROM auth_requests WHERE id=?", (request_id,)).fetchone()
        client = load_client(conn, pending["client_id"]) if pending else None
    if (
        pending is None
        or pending["session_hash"] != session.id_hash
        or pending["used"]
        or pending["created_at"] + AUTH_REQUEST_TTL < now
    ):
        return _error_page(400, "Authorization expired", "This authorization request is unknown, used or expired.")
    redirect_uri = pending["redirect_uri"]
    state = pending["state"]
    if client is None:
        return _error_page(400, "Invalid client", "The OAuth client is unknown or has been deleted.")
    requested: list[str] = loads(pending["scopes"])

    decision = req.form_value("decision")
    if decision not in ("authorize", "deny"):
        return _render_consent(
            app, client, session, request_id, requested, error="Choose Authorize or Deny.", status=400
        )
    if decision == "deny":
        with app.store.write() as conn:
            if not conn.execute("UPDATE auth_requests SET used=1 WHERE id=? AND used=0", (request_id,)).rowcount:
                return _error_page(400, "Authorization expired", "This authorization request was already answered.")
        return _error_redirect(app, redirect_uri, "access_denied", "The resource owner denied the request.", state)

    accounts_info = user_accounts(app, session.user_id)
    enabled_ids = [a["id"] for a in accounts_info if a["oauth_app_access"]]
    mode = req.form_value("account_mode") or "all"
    accounts: list[str] | str
    if mode == "all":
        accounts = "all"
    elif mode == "specific":
        chosen = list(dict.fromkeys(req.form.get("account", [])))
        if not chosen:
            return _render_consent(
                app, client, session, request_id, requested, error="Choose at least one account.", status=400
            )
        if any(aid not in enabled_ids for aid in chosen):
            return _render_consent(
                app,
                client,
                session,
                request_id,
                requested,
                error="One of the chosen accounts is not available to OAuth applications.",
                status=400,
            )
        accounts = chosen
    else:
        return _render_consent(app, client, session, request_id, requested, error="Choose the accounts.", status=400)

    required_ids = set(loads(client["scopes"]))
    ticked = set(req.form.get("optional_scope", []))
    granted = [s for s in requested if s in required_ids or s in ticked]

    code = new_code()
    with app.store.write() as conn:
        if not conn.execute("UPDATE auth_requests SET used=1 WHERE id=? AND used=0", (request_id,)).rowcount:
            return _error_page(400, "Authorization expired", "This authorization request was already answered.")
        conn.execute(
            "INSERT INTO codes(code_hash, client_id, user_id, redirect_uri, redirect_uri_in_request, scopes, accounts, "
            "code_challenge, code_challenge_method, created_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                sha256_hex(code),
                client["client_id"],
                session.user_id,
                redirect_uri,
                pending["redirect_uri_in_request"],
                dumps(granted),
                dumps(accounts),
                pending["code_challenge"],
                pending["code_challenge_method"],
                now,
                now + int(app.settings.code_ttl),
            ),
        )
    return redirect(callback_url(app, redirect_uri, [("code", code), ("scope", " ".join(granted)), ("state", state)]))


# -------------------------------------------------------------------------------------------- token


def _check_form(req: Request) -> Response | None:
    if req.method != "POST":
        return oauth_error(
            405, "invalid_request", f"HTTP method is '{req.method}', expected 'POST'.", [("Allow", "POST")]
        )
    if req.content_type != "application/x-www-form-urlencoded":
        return oauth_error(
            400, "invalid_request", "The request must use Content-Type application/x-www-form-urlencoded."
        )
    for name, values in req.form.items():
        if len(values) > 1:
            return oauth_error(400, "invalid_request", f"The parameter {name} was given more than once.")
    return None


def authenticate_client(app: SandboxApp, req: Request) -> tuple[sqlite3.Row | None, Response | None]:
    """``client_secret_basic`` or ``client_secret_post`` (RFC 6749 §2.3.1); exactly one of them."""
    basic: tuple[str, str] | None = None
    header = req.headers.get("Authorization") or ""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, oauth_error(
                400, "invalid_request", "The client credentials in the HTTP authorization header could not be parsed."
            )
        if ":" not in decoded:
            return None, oauth_error(
                400, "invalid_request", "The client credentials in the HTTP authorization header are malformed."
            )
        raw_id, _, raw_secret = decoded.partition(":")
        basic = (unquote_plus(raw_id), unquote_plus(raw_secret))
    post_id = req.form_value("client_id")
    post_secret = req.form_value("client_secret")
    if basic is not None:
        if post_secret is not None:
            return None, oauth_error(400, "invalid_request", "The client used more than one authentication method.")
        if post_id is not None and post_id != basic[0]:
            return None, oauth_error(400, "invalid_request", "client_id does not match the authenticated client.")
        client_id, secret, method = basic[0], basic[1], "client_secret_basic"
    elif post_id is not None and post_secret is not None:
        client_id, secret, method = post_id, post_secret, "client_secret_post"
    elif post_id is not None:
        return None, invalid_client("The client is confidential and must authenticate.")
    else:
        return None, oauth_error(
            400,
            "invalid_request",
            "Client credentials missing or malformed in both HTTP Authorization header and HTTP POST body.",
        )
    with app.store.read() as conn:
        client = load_client(conn, client_id)
    if client is None or not same_secret(secret, client["secret_hash"]):
        return None, invalid_client()
    registered_method = client["token_endpoint_auth_method"]
    if registered_method and registered_method != method:
        return None, invalid_client(
            f"The client supports the authentication method '{registered_method}' but '{method}' was used."
        )
    return client, None


def _token_response(access: str, refresh: str | None, expires_in: int, scopes: list[str]) -> Response:
    payload: dict[str, Any] = {"access_token": access, "expires_in": expires_in}
    if refresh is not None:
        payload["refresh_token"] = refresh
    payload["scope"] = " ".join(scopes)
    payload["token_type"] = "bearer"
    return json_response(200, payload, list(_NO_STORE))


def token(app: SandboxApp, req: Request) -> Response:
    """``POST /oauth2/token``: ``authorization_code`` and ``refresh_token`` grants."""
    problem = _check_form(req)
    if problem:
        return problem
    grant_type = req.form_value("grant_type")
    if not grant_type:
        return oauth_error(400, "invalid_request", "The grant_type parameter is missing.")
    if grant_type not in ("authorization_code", "refresh_token"):
        return oauth_error(400, "unsupported_grant_type", f"The grant type '{grant_type}' is not supported.")
    client, problem = authenticate_client(app, req)
    if problem:
        return problem
    assert client is not None
    if grant_type == "authorization_code":
        return _exchange_code(app, req, client)
    return _refresh(app, req, client)


def _exchange_code(app: SandboxApp, req: Request, client: sqlite3.Row) -> Response:
    code = req.form_value("code")
    if not code:
        return oauth_error(400, "invalid_request", "The code parameter is missing.")
    redirect_uri = req.form_value("redirect_uri")
    verifier = req.form_value("code_verifier")
    now = app.clock.now()
    with app.store.write() as conn:
        row = conn.execute("SELECT * FROM codes WHERE code_hash=?", (sha256_hex(code),)).fetchone()
        if row is None or row["client_id"] != client["client_id"]:
            return invalid_grant(app, "The authorization code is unknown or was issued to another client.")
        if row["used_at"] is not None:
            if row["grant_id"]:
                revoke_grant(conn, row["grant_id"], "code_reuse", now)
            return invalid_grant(
                app, "The authorization code has already been used; the tokens issued for it have been revoked."
            )
        if row["expires_at"] <= now:
            return invalid_grant(app, "The authorization code has expired.")
        if row["redirect_uri_in_request"]:
            if redirect_uri != row["redirect_uri"]:
                return invalid_grant(app, "The redirect_uri does not match the one used in the authorization request.")
        elif redirect_uri is not None and redirect_uri != row["redirect_uri"]:
            return invalid_grant(app, "The redirect_uri does not match the registered one.")
        if row["code_challenge"]:
            if not verifier:
                return invalid_grant(app, "The PKCE code_verifier is missing.")
            if not _PKCE_RE.match(verifier) or pkce_s256(verifier) != row["code_challenge"]:
                return invalid_grant(app, "The PKCE code challenge did not match the code verifier.")
        elif verifier:
            return invalid_grant(app, "A code_verifier was sent but the authorization request had no code_challenge.")
        scopes: list[str] = loads(row["scopes"])
        grant_id = create_grant(
            conn,
            client_id=client["client_id"],
            user_id=row["user_id"],
            scopes=scopes,
            accounts=loads(row["accounts"]),
            now=now,
        )
        access, refresh, ttl = issue_tokens(conn, app.settings, grant_id, with_refresh=wants_refresh(scopes), now=now)
        conn.execute("UPDATE codes SET used_at=?, grant_id=? WHERE code_hash=?", (now, grant_id, row["code_hash"]))
    return _token_response(access, refresh, ttl, scopes)


def _refresh(app: SandboxApp, req: Request, client: sqlite3.Row) -> Response:
    presented = req.form_value("refresh_token")
    if not presented:
        return oauth_error(400, "invalid_request", "The refresh_token parameter is missing.")
    scope_param = req.form_value("scope")
    settings = app.settings
    now = app.clock.now()
    with app.store.write() as conn:
        row = conn.execute(
            "SELECT r.token_hash, r.status AS token_status, r.rotated_at, r.expires_at, g.id AS grant_id, "
            "g.client_id, g.status AS grant_status, g.scopes FROM refresh_tokens r JOIN grants g ON g.id=r.grant_id "
            "WHERE r.token_hash=?",
            (sha256_hex(presented),),
        ).fetchone()
        if row is None or row["client_id"] != client["client_id"]:
            return invalid_grant(app, "The refresh token is unknown or was issued to another client.")
        grant_id = row["grant_id"]
        in_grace = False
        if row["token_status"] == "rotated":
            grace = int(settings.refresh_grace_seconds)
            in_grace = (
                grace > 0
                and row["grant_status"] == "active"
                and row["rotated_at"] is not None
                and now - row["rotated_at"] <= grace
            )
            if not in_grace:
                conn.execute("UPDATE grants SET reuse_count=reuse_count+1 WHERE id=?", (grant_id,))
                conn.execute("UPDATE meta SET value=CAST(CAST(value AS INTEGER)+1 AS TEXT) WHERE key='reuse_total'")
                revoke_grant(conn, grant_id, "refresh_reuse", now)
                return invalid_grant(
                    app, "The refresh token has already been used; the whole authorization has been revoked."
                )
        elif row["token_status"] != "current" or row["grant_status"] != "active":
            return invalid_grant(app, "The refresh token has been revoked.")
        if row["expires_at"] is not None and row["expires_at"] <= now:
            return invalid_grant(app, "The refresh token has expired.")
        scopes: list[str] = loads(row["scopes"])
        if scope_param is not None:
            asked = [s for s in scope_param.split(" ") if s]
            if any(s not in scopes for s in asked):
                return oauth_error(
                    400, "invalid_scope", "The requested scope exceeds the scope granted by the resource owner."
                )
        if settings.refresh_revokes_old_access:
            conn.execute("UPDATE access_tokens SET revoked=1 WHERE grant_id=? AND revoked=0", (grant_id,))
        rotate = bool(settings.rotate_refresh_tokens) or in_grace
        if rotate and not in_grace:
            conn.execute(
                "UPDATE refresh_tokens SET status='rotated', rotated_at=? WHERE token_hash=?", (now, row["token_hash"])
            )
        access, refresh, ttl = issue_tokens(conn, settings, grant_id, with_refresh=rotate, now=now)
        conn.execute(
            "UPDATE grants SET refresh_count=refresh_count+1, grace_count=grace_count+?, last_refresh_at=? WHERE id=?",
            (1 if in_grace else 0, now, grant_id),
        )
    if app.faults.take_drop():
        return Response(0, drop_connection=True)
    return _token_response(access, refresh, ttl, scopes)


# ------------------------------------------------------------------------------------------- revoke


def revoke(app: SandboxApp, req: Request) -> Response:
    """``POST /oauth2/revoke`` (RFC 7009): 200 with an empty body, also for unknown tokens."""
    problem = _check_form(req)
    if problem:
        return problem
    client = None
    has_credentials = bool(req.headers.get("Authorization")) or req.form_value("client_id") is not None
    if has_credentials or app.settings.revoke_requires_client_auth:
        client, problem = authenticate_client(app, req)
        if problem:
            return problem
    presented = req.form_value("token")
    if not presented:
        return oauth_error(400, "invalid_request", "The token parameter is missing.")
    hint = req.form_value("token_type_hint")
    if hint not in (None, "", "access_token", "refresh_token"):
        return oauth_error(400, "unsupported_token_type", f"The token type hint '{hint}' is not supported.")
    token_hash = sha256_hex(presented)
    now = app.clock.now()
    with app.store.write() as conn:
        row = conn.execute(
            "SELECT g.id, g.client_id FROM refresh_tokens r JOIN grants g ON g.id=r.grant_id WHERE r.token_hash=?",
            (token_hash,),
        ).fetchone()
        if row is not None:
            if client is None or row["client_id"] == client["client_id"]:
                revoke_grant(
                    conn,
                    row["id"],
                    "revoked_by_client",
                    now,
                    kill_access=bool(app.settings.revoke_refresh_kills_access),
                )
        else:
            row = conn.execute(
                "SELECT a.token_hash, g.client_id FROM access_tokens a JOIN grants g ON g.id=a.grant_id "
                "WHERE a.token_hash=?",
                (token_hash,),
            ).fetchone()
            if row is not None and (client is None or row["client_id"] == client["client_id"]):
                conn.execute("UPDATE access_tokens SET revoked=1 WHERE token_hash=?", (token_hash,))
    return Response(200, b"", list(_NO_STORE))


# --------------------------------------------------------------------------------- userinfo, discovery


def userinfo(app: SandboxApp, req: Request) -> Response:
    """``/oauth2/userinfo``: only ``sub`` [doc][3p]; use ``GET /client/v4/user`` for the rest."""
    header = req.headers.get("Authorization") or ""
    scheme, _, value = header.partition(" ")
    principal = None
    if scheme.lower() == "bearer" and value.strip():
        with app.store.read() as conn:
            principal = resolve_bearer(conn, value.strip(), app.clock.now())
    if principal is None or principal.kind != "oauth":
        return oauth_error(
            401,
            "request_unauthorized",
            "The request could not be authorized. Check that you provided valid credentials in the right format.",
            [("WWW-Authenticate", 'Bearer error="invalid_token"')],
        )
    return json_response(200, {"sub": principal.user_id}, list(_NO_STORE))


def discovery(app: SandboxApp, req: Request) -> Response:
    """``/.well-known/openid-configuration`` with this sandbox's issuer and endpoints."""
    issuer = app.issuer
    doc = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/oauth2/auth",
        "token_endpoint": f"{issuer}/oauth2/token",
        "revocation_endpoint": f"{issuer}/oauth2/revoke",
        "userinfo_endpoint": f"{issuer}/oauth2/userinfo",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": list(CATALOGUE),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": ["sub"],
        "authorization_response_iss_parameter_supported": bool(app.settings.send_iss),
    }
    return json_response(200, doc, [("Cache-Control", "public, max-age=60")])


def jwks(app: SandboxApp, req: Request) -> Response:
    """An empty key set: the sandbox issues no signed tokens."""
    return Response(200, b'{"keys":[]}', [("Content-Type", JSON_TYPE)])
