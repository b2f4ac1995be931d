"""HTML pages of the sandbox: login, consent, connected applications, account settings, errors.

They stand in for Cloudflare's dashboard screens. Element names and ids are part of the contract
(tests and browser-driven demos fill them in): login ``email`` / ``password`` / ``#login``; consent
``account_mode`` (``all`` / ``specific``), ``account``, ``optional_scope``, ``#authorize`` /
``#deny``. Every value is HTML-escaped and the pages load nothing from other origins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

_CSS = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:#f2f4f7;color:#1d1f20}
header{background:#fff;border-bottom:1px solid #d9dde3;padding:12px 24px;display:flex;justify-content:space-between;align-items:center}
header .brand{font-weight:700;color:#f38020}
header .brand small{color:#6b7280;font-weight:400;margin-left:6px}
main{max-width:640px;margin:32px auto;background:#fff;border:1px solid #d9dde3;border-radius:8px;padding:28px}
h1{font-size:22px;margin:0 0 12px}
h2{font-size:16px;margin:22px 0 8px}
label{display:block;margin:6px 0}
input[type=email],input[type=password],input[type=text]{width:100%;padding:9px;border:1px solid #b8bec8;border-radius:4px;font-size:15px}
button{padding:9px 18px;border-radius:4px;border:1px solid #b8bec8;background:#fff;font-size:15px;cursor:pointer}
button.primary{background:#0051c3;border-color:#0051c3;color:#fff}
.row{display:flex;gap:12px;align-items:center}
.app{display:flex;gap:16px;align-items:center;margin-bottom:16px}
.logo{width:56px;height:56px;border-radius:12px;background:#f38020;color:#fff;display:flex;align-items:center;justify-content:center;font-size:24px;font-weight:700}
.logo img{width:56px;height:56px;border-radius:12px}
.badge{display:inline-block;font-size:12px;padding:1px 8px;border-radius:10px;margin-left:6px}
.verified{background:#e6f4ea;color:#1e7e34}
.unverified{background:#fdecea;color:#a61b1b}
.muted{color:#6b7280;font-size:13px}
.error{background:#fdecea;color:#a61b1b;padding:10px;border-radius:4px;margin-bottom:12px}
ul.scopes{padding-left:18px}
.disabled{color:#9aa0a6}
table{width:100%;border-collapse:collapse}
td,th{text-align:left;padding:8px;border-bottom:1px solid #eceff3;vertical-align:top}
.actions{margin-top:24px;display:flex;gap:12px;justify-content:flex-end}
"""


def layout(title: str, body: str, *, user_email: str | None = None) -> str:
    """Wrap a page body in the common frame."""
    who = ""
    if user_email:
        who = (
            f'<span class="muted">Signed in as {escape(user_email)} · '
            '<a href="/profile/connected-applications">Connected applications</a> · '
            '<a href="/profile/accounts">Accounts</a> · <a href="/logout">Sign out</a></span>'
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} · Cloudflare sandbox</title><style>{_CSS}</style></head><body>"
        f'<header><span class="brand">Cloudflare<small>local sandbox</small></span>{who}</header>'
        f"<main>{body}</main></body></html>"
    )


def login_page(next_url: str, *, error: str | None = None, email: str = "") -> str:
    """Sandbox login form (all seeded users share the password ``sandbox-password``)."""
    err = f'<div class="error" role="alert">{escape(error)}</div>' if error else ""
    body = (
        f"<h1>Log in to Cloudflare</h1>{err}"
        '<form method="post" action="/login" id="login-form">'
        f'<input type="hidden" name="next" value="{escape(next_url)}">'
        f'<label>Email<input type="email" name="email" value="{escape(email)}" autocomplete="username" required></label>'
        '<label>Password<input type="password" name="password" autocomplete="current-password" required></label>'
        '<div class="actions"><button type="submit" id="login" class="primary">Log in</button></div>'
        '</form><p class="muted">Local sandbox only: seeded users are alice@example.com, bob@example.com '
        "and carol@example.com with the password <code>sandbox-password</code>.</p>"
    )
    return layout("Log in", body)


def _logo(client: Any) -> str:
    logo_uri = client["logo_uri"] or ""
    if logo_uri.startswith("data:image/"):
        return f'<div class="logo"><img src="{escape(logo_uri)}" alt=""></div>'
    initial = (client["name"] or "?").strip()[:1].upper() or "?"
    return f'<div class="logo" aria-hidden="true">{escape(initial)}</div>'


def consent_page(
    *,
    client: Any,
    user_email: str,
    auth_request_id: str,
    csrf_token: str,
    required_scopes: Sequence[tuple[str, str]],
    optional_scopes: Sequence[tuple[str, str]],
    accounts: Sequence[tuple[str, str, bool]],
    error: str | None = None,
) -> str:
    """Consent screen: app identity, account choice, required and optional scopes, Authorize / Deny."""
    if client["domain_verified"]:
        badge = '<span class="badge verified" id="publisher-verified">Verified</span>'
    else:
        badge = '<span class="badge unverified" id="publisher-unverified">Unverified</span>'
    publisher = escape(client["publisher_domain"] or "unknown publisher")
    err = f'<div class="error" role="alert">{escape(error)}</div>' if error else ""
    account_rows = []
    for aid, name, enabled in accounts:
        if enabled:
            account_rows.append(
                f'<label><input type="checkbox" name="account" value="{escape(aid)}"> {escape(name)}</label>'
            )
        else:
            account_rows.append(
                f'<label class="disabled"><input type="checkbox" name="account" value="{escape(aid)}" disabled> '
                f'{escape(name)} <span class="muted">(OAuth app access is turned off for this account)</span></label>'
            )
    required = "".join(
        f'<li data-scope="{escape(sid)}">{escape(name)} <span class="muted">{escape(sid)}</span></li>'
        for sid, name in required_scopes
    )
    optional = "".join(
        f'<label><input type="checkbox" name="optional_scope" value="{escape(sid)}" checked> {escape(name)} '
        f'<span class="muted">{escape(sid)}</span></label>'
        for sid, name in optional_scopes
    )
    body = (
        f'<div class="app">{_logo(client)}<div><h1>{escape(client["name"])}</h1>'
        f'<div>by <strong id="publisher-domain">{publisher}</strong>{badge}</div></div></div>{err}'
        f"<p>{escape(client['name'])} wants to access your Cloudflare account as {escape(user_email)}.</p>"
        '<form method="post" action="/oauth2/consent" id="consent">'
        f'<input type="hidden" name="auth_request" value="{escape(auth_request_id)}">'
        f'<input type="hidden" name="csrf_token" value="{escape(csrf_token)}">'
        "<h2>Accounts</h2>"
        '<label><input type="radio" name="account_mode" value="all" checked> All accounts</label>'
        '<label><input type="radio" name="account_mode" value="specific"> Specific accounts</label>'
        f'<div style="margin-left:24px">{"".join(account_rows)}</div>'
        f'<h2>Required permissions</h2><ul class="scopes" id="required-scopes">{required or "<li>None</li>"}</ul>'
        + (f'<h2>Optional permissions</h2><div id="optional-scopes">{optional}</div>' if optional else "")
        + '<div class="actions">'
        '<button type="submit" name="decision" value="deny" id="deny">Deny</button>'
        '<button type="submit" name="decision" value="authorize" id="authorize" class="primary">Authorize</button>'
        "</div></form>"
    )
    return layout(f"Authorize {client['name']}", body, user_email=user_email)


def error_page(title: str, message: str) -> str:
    """An error shown instead of redirecting (e.g. an unregistered redirect URI, RFC 6749 §4.1.2.1)."""
    body = f'<h1>{escape(title)}</h1><div class="error" role="alert" id="error">{escape(message)}</div>'
    return layout(title, body)


def connected_apps_page(user_email: str, apps: Iterable[dict[str, Any]], csrf_token: str) -> str:
    """Profile › Access Management › Connected Applications [doc]."""
    rows = []
    for app in apps:
        rows.append(
            "<tr>"
            f'<td><strong>{escape(app["name"])}</strong><div class="muted">{escape(app["publisher_domain"] or "")}</div></td>'
            f'<td class="muted">{escape(" ".join(app["scopes"]))}</td>'
            f"<td>{escape(app['accounts'])}</td>"
            '<td><form method="post" action="/profile/connected-applications/revoke">'
            f'<input type="hidden" name="csrf_token" value="{escape(csrf_token)}">'
            f'<input type="hidden" name="client_id" value="{escape(app["client_id"])}">'
            f'<button type="submit" id="revoke-{escape(app["client_id"])}">Revoke</button></form></td>'
            "</tr>"
        )
    table = (
        "<table><tr><th>Application</th><th>Permissions</th><th>Accounts</th><th></th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else '<p class="muted" id="no-apps">No connected applications.</p>'
    )
    return layout("Connected applications", f"<h1>Connected applications</h1>{table}", user_email=user_email)


def accounts_page(user_email: str, accounts: Iterable[dict[str, Any]], csrf_token: str) -> str:
    """Per-account switch for "Public OAuth App access" [doc]."""
    rows = []
    for account in accounts:
        enabled = account["oauth_app_access"]
        rows.append(
            "<tr>"
            f'<td>{escape(account["name"])}<div class="muted">{escape(account["id"])}</div></td>'
            f"<td>{'On' if enabled else 'Off'}</td>"
            '<td><form method="post" action="/profile/accounts/oauth-access">'
            f'<input type="hidden" name="csrf_token" value="{escape(csrf_token)}">'
            f'<input type="hidden" name="account_id" value="{escape(account["id"])}">'
            f'<input type="hidden" name="enabled" value="{"false" if enabled else "true"}">'
            f'<button type="submit">{"Turn off" if enabled else "Turn on"}</button></form></td>'
            "</tr>"
        )
    body = (
        '<h1>Accounts</h1><p class="muted">Turning off OAuth app access stops new authorizations for the '
        "account; applications already authorized keep working.</p>"
        "<table><tr><th>Account</th><th>OAuth app access</th><th></th></tr>" + "".join(rows) + "</table>"
    )
    return layout("Accounts", body, user_email=user_email)


def home_page(user_email: str | None) -> str:
    """Landing page with links to the user's pages."""
    if user_email:
        body = (
            "<h1>Cloudflare sandbox</h1><p>A local stand-in for Cloudflare's OAuth server and API v4.</p>"
            '<ul><li><a href="/profile/connected-applications">Connected applications</a></li>'
            '<li><a href="/profile/accounts">Accounts</a></li></ul>'
        )
    else:
        body = (
            "<h1>Cloudflare sandbox</h1><p>A local stand-in for Cloudflare's OAuth server and API v4.</p>"
            '<p><a href="/login">Log in</a></p>'
        )
    return layout("Home", body, user_email=user_email)


def challenge_page() -> str:
    """The bot-challenge interstitial Cloudflare's edge has served instead of JSON (workers-sdk #15723)."""
    return (
        '<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>'
        '<meta http-equiv="Content-Type" content="text/html; charset=UTF-8">'
        '<meta name="robots" content="noindex,nofollow"></head><body>'
        '<div class="main-wrapper" role="main"><div class="main-content">'
        '<h1 class="zone-name-title h1">dash.cloudflare.com</h1>'
        '<h2 class="h2" id="challenge-running">Checking if the site connection is secure</h2>'
        '<noscript><div class="h2">Enable JavaScript and cookies to continue</div></noscript>'
        "</div></div></body></html>"
    )


def edge_error_page(status: int) -> str:
    """An edge-style HTML error page (what a 502/503 from Cloudflare's edge looks like)."""
    titles = {500: "Internal server error", 502: "Bad gateway", 503: "Service unavailable"}
    title = titles.get(status, "Error")
    return (
        f'<!DOCTYPE html><html lang="en-US"><head><title>dash.cloudflare.com | {status}: {title}</title></head>'
        f'<body><div id="cf-error-details"><h1>{title}</h1><span>Error code {status}</span>'
        "<p>The web server reported an error. Please try again in a few minutes.</p></div></body></html>"
    )
