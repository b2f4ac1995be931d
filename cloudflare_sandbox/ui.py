"""The user's side of Cloudflare: sandbox login, Connected applications, account OAuth switch.

Cloudflare lets a user revoke an application under Profile › Access Management › Connected
Applications, and an account admin switch off "Public OAuth App access" for an account [doc]. There
is no webhook for either [doc], so the portal can only notice them through refresh and API probes;
these pages let a person (or a browser test) trigger both.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from . import pages
from .grants import revoke_user_client
from .store import loads
from .tokens import sha256_hex, verify_password
from .web import Request, Response, html_response, redirect

if TYPE_CHECKING:
    from .server import SandboxApp

SESSION_COOKIE = "cf_sandbox_session"
SESSION_TTL = 7 * 24 * 3600


@dataclass(frozen=True)
class Session:
    """A signed-in sandbox user."""

    id_hash: str
    user_id: str
    email: str
    csrf_token: str


def current_session(app: SandboxApp, req: Request) -> Session | None:
    """The session named by the cookie, if it exists and has not expired."""
    raw = req.cookie(SESSION_COOKIE)
    if not raw:
        return None
    id_hash = sha256_hex(raw)
    with app.store.read() as conn:
        row = conn.execute(
            "SELECT s.id_hash, s.user_id, s.csrf_token, s.created_at, u.email FROM sessions s "
            "JOIN users u ON u.id=s.user_id WHERE s.id_hash=?",
            (id_hash,),
        ).fetchone()
    if row is None or row["created_at"] + SESSION_TTL < app.clock.now():
        return None
    return Session(row["id_hash"], row["user_id"], row["email"], row["csrf_token"])


def csrf_ok(session: Session, presented: str | None) -> bool:
    """Constant-time check of the per-session CSRF token."""
    return bool(presented) and hmac.compare_digest(session.csrf_token, presented or "")


def safe_next(value: str | None, default: str = "/") -> str:
    """Only same-origin relative paths may be used as a post-login target (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or value.startswith("/\\"):
        return default
    if any(ch in value for ch in "\r\n\t"):
        return default
    return value


def login_redirect(req: Request) -> Response:
    """Send an anonymous visitor to the login form, coming back to this URL afterwards."""
    target = req.path + (f"?{req.raw_query}" if req.raw_query else "")
    return redirect("/login?next=" + quote(target, safe=""))


def _cookie(value: str, *, max_age: int) -> tuple[str, str]:
    """The session cookie: HttpOnly and SameSite=Lax (Strict would drop it on the way back from an
    OAuth redirect). No ``Secure`` flag: the sandbox is served over plain HTTP on the loopback."""
    return ("Set-Cookie", f"{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}")


def login_get(app: SandboxApp, req: Request) -> Response:
    """Show the login form."""
    return html_response(200, pages.login_page(safe_next(req.arg("next"))))


def login_post(app: SandboxApp, req: Request) -> Response:
    """Check email and password, start a fresh session, go back to ``next``."""
    email = (req.form_value("email") or "").strip().lower()
    password = req.form_value("password") or ""
    next_url = safe_next(req.form_value("next"))
    with app.store.read() as conn:
        user = conn.execute("SELECT id, password_hash FROM users WHERE email=?", (email,)).fetchone()
    if user is None or not verify_password(password, user["password_hash"]):
        return html_response(401, pages.login_page(next_url, error="Incorrect email or password.", email=email))
    raw = secrets.token_urlsafe(32)
    now = app.clock.now()
    old = req.cookie(SESSION_COOKIE)
    with app.store.write() as conn:
        if old:
            conn.execute("DELETE FROM sessions WHERE id_hash=?", (sha256_hex(old),))
        conn.execute(
            "INSERT INTO sessions(id_hash, user_id, csrf_token, created_at) VALUES (?,?,?,?)",
            (sha256_hex(raw), user["id"], secrets.token_urlsafe(32), now),
        )
    return redirect(next_url, headers=[_cookie(raw, max_age=SESSION_TTL)])


def logout(app: SandboxApp, req: Request) -> Response:
    """End the session (the consent page links here to switch users)."""
    raw = req.cookie(SESSION_COOKIE)
    if raw:
        with app.store.write() as conn:
            conn.execute("DELETE FROM sessions WHERE id_hash=?", (sha256_hex(raw),))
    target = safe_next(req.arg("next"), default="/login")
    return redirect(target, headers=[_cookie("", max_age=0)])


def home(app: SandboxApp, req: Request) -> Response:
    """Landing page."""
    session = current_session(app, req)
    return html_response(200, pages.home_page(session.email if session else None))


def user_accounts(app: SandboxApp, user_id: str) -> list[dict[str, Any]]:
    """Accounts the user belongs to, with their OAuth app access switch."""
    with app.store.read() as conn:
        rows = conn.execute(
            "SELECT a.id, a.name, a.oauth_disabled_at FROM accounts a JOIN memberships m ON m.account_id=a.id "
            "WHERE m.user_id=? ORDER BY a.name",
            (user_id,),
        ).fetchall()
    return [{"id": r["id"], "name": r["name"], "oauth_app_access": r["oauth_disabled_at"] is None} for r in rows]


def connected_apps(app: SandboxApp, req: Request) -> Response:
    """List the applications the user has authorized."""
    session = current_session(app, req)
    if session is None:
        return login_redirect(req)
    names = {a["id"]: a["name"] for a in user_accounts(app, session.user_id)}
    with app.store.read() as conn:
        rows = conn.execute(
            "SELECT g.client_id, g.scopes, g.accounts, c.name, c.publisher_domain FROM grants g "
            "JOIN clients c ON c.client_id=g.client_id WHERE g.user_id=? AND g.status='active' "
            "AND c.deleted_at IS NULL ORDER BY g.created_at",
            (session.user_id,),
        ).fetchall()
    apps: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = apps.setdefault(
            row["client_id"],
            {
                "client_id": row["client_id"],
                "name": row["name"],
                "publisher_domain": row["publisher_domain"],
                "scopes": [],
                "accounts": set(),
            },
        )
        for scope in loads(row["scopes"]):
            if scope not in entry["scopes"]:
                entry["scopes"].append(scope)
        accounts = loads(row["accounts"])
        if accounts == "all":
            entry["accounts"].add("All accounts")
        else:
            entry["accounts"].update(names.get(aid, aid) for aid in accounts)
    for entry in apps.values():
        entry["accounts"] = ", ".join(sorted(entry["accounts"]))
    return html_response(200, pages.connected_apps_page(session.email, apps.values(), session.csrf_token))


def connected_apps_revoke(app: SandboxApp, req: Request) -> Response:
    """Revoke every grant of this user for one client (reason ``user``)."""
    session = current_session(app, req)
    if session is None:
        return login_redirect(req)
    if not csrf_ok(session, req.form_value("csrf_token")):
        return html_response(403, pages.error_page("Forbidden", "The form has expired. Reload the page and retry."))
    client_id = req.form_value("client_id") or ""
    with app.store.write() as conn:
        revoke_user_client(conn, session.user_id, client_id, "user", app.clock.now())
    return redirect("/profile/connected-applications")


def accounts_get(app: SandboxApp, req: Request) -> Response:
    """Show the user's accounts and their OAuth app access switch."""
    session = current_session(app, req)
    if session is None:
        return login_redirect(req)
    accounts = user_accounts(app, session.user_id)
    return html_response(200, pages.accounts_page(session.email, accounts, session.csrf_token))


def accounts_post(app: SandboxApp, req: Request) -> Response:
    """Turn OAuth app access on or off for one of the user's accounts."""
    session = current_session(app, req)
    if session is None:
        return login_redirect(req)
    if not csrf_ok(session, req.form_value("csrf_token")):
        return html_response(403, pages.error_page("Forbidden", "The form has expired. Reload the page and retry."))
    account_id = req.form_value("account_id") or ""
    enabled = (req.form_value("enabled") or "").lower() == "true"
    if account_id not in {a["id"] for a in user_accounts(app, session.user_id)}:
        return html_response(404, pages.error_page("Not found", "No such account."))
    set_oauth_access(app, account_id, enabled)
    return redirect("/profile/accounts")


def set_oauth_access(app: SandboxApp, account_id: str, enabled: bool) -> bool:
    """Switch "Public OAuth App access" for an account; returns False for an unknown account."""
    with app.store.write() as conn:
        if enabled:
            changed = conn.execute("UPDATE accounts SET oauth_disabled_at=NULL WHERE id=?", (account_id,)).rowcount
        else:
            changed = conn.execute(
                "UPDATE accounts SET oauth_disabled_at=COALESCE(oauth_disabled_at, ?) WHERE id=?",
                (app.clock.now(), account_id),
            ).rowcount
    return bool(changed)
