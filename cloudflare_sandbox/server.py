"""HTTP server and routing for the sandbox.

``ThreadingHTTPServer`` with daemon threads, HTTP/1.1 keep-alive (every response carries
``Content-Length``), Nagle disabled and one buffered write per response, so the token endpoint
sustains several hundred requests per second on a small machine. Each request is logged as one line
(method, path without the query string, status): query strings and bodies carry codes and tokens and
are never logged.
"""

from __future__ import annotations

import json
import secrets
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO
from urllib.parse import urlsplit

from . import api, control, oauth, pages, ui
from .runtime import BAD_TOKEN_REPLACEMENTS, Clock, Counters, Faults, PeakMeter, RateLimiter, Settings
from .seed import apply_environment, seed
from .store import Store
from .web import Request, Response, html_response, json_response, redirect

MAX_BODY = 10 * 1024 * 1024


class SandboxApp:
    """Everything one sandbox process knows, plus request routing."""

    def __init__(
        self,
        *,
        db_path: str,
        issuer: str = "",
        control_enabled: bool = False,
        settings: dict[str, Any] | None = None,
        quiet: bool = False,
        log_stream: TextIO | None = None,
    ) -> None:
        self.store = Store(db_path)
        self.settings = Settings(settings)
        self.faults = Faults()
        self.counters = Counters()
        self.ratelimiter = RateLimiter()
        self.peaks = PeakMeter()
        self.clock = Clock()
        self.issuer = issuer.rstrip("/")
        self.control_enabled = control_enabled
        self.quiet = quiet
        self._log_stream = log_stream or sys.stderr
        self._log_lock = threading.Lock()
        self.ensure_seeded()

    # ------------------------------------------------------------------ lifecycle

    def ensure_seeded(self) -> None:
        """Seed an empty database; apply environment overrides to the demo client on every start."""
        with self.store.write() as conn:
            if conn.execute("SELECT 1 FROM meta WHERE key='seeded_at'").fetchone() is None:
                seed(conn, self.clock.now())
            apply_environment(conn)

    def reset(self) -> None:
        """Wipe and reseed the database and return every runtime knob to its start-up value."""
        self.faults.clear()
        self.settings.reset()
        self.counters.reset()
        self.ratelimiter.reset()
        self.peaks.reset()
        self.clock.offset = 0.0
        with self.store.write() as conn:
            self.store.wipe(conn)
            seed(conn, self.clock.now())
            apply_environment(conn)

    def log_request(self, method: str, path: str, status: int | str, elapsed_ms: float) -> None:
        """One line per request; the path is printed without its query string."""
        if self.quiet:
            return
        safe_path = "".join(ch if ch.isprintable() and ch != " " else "?" for ch in path)[:200]
        with self._log_lock:
            self._log_stream.write(f"cloudflare-sandbox: {method} {safe_path} {status} ({elapsed_ms:.1f} ms)\n")
            self._log_stream.flush()

    # -------------------------------------------------------------------- routing

    def handle(self, req: Request) -> Response:
        """Route a request to the OAuth server, the API, the user pages or the control endpoint."""
        path, method = req.path, req.method
        if path == control.PREFIX or path.startswith(control.PREFIX + "/"):
            if not self.control_enabled:
                return _not_found()
            return control.handle(self, req)
        if path == api.API_PREFIX or path.startswith(api.API_PREFIX + "/"):
            route, params, key = api.match(req)
            self.counters.add("api", key)
            per_second = self.peaks.hit(f"ip:{req.client_ip}", self.clock.now())
            ip_limit = int(self.settings.ip_rate_limit)
            if ip_limit and per_second > ip_limit:
                self.counters.add("ip_rate_limited")
                return api.rate_limited(1, int(self.settings.rate_limit_code))
            return self._faulted("api", req) or api.dispatch(self, req, route, params)
        if path == "/oauth2/token":
            keys = ["token"]
            grant_type = req.form_value("grant_type") if method == "POST" else None
            if grant_type in ("authorization_code", "refresh_token"):
                keys.append(f"token:{grant_type}")
            self.counters.add(*keys, f"{method} /oauth2/token")
            self.peaks.hit(f"ip:{req.client_ip}", self.clock.now())
            faulted = self._faulted("token", req)
            if faulted:
                return faulted
            response = oauth.token(self, req)
            bad = self.faults.bad_token_response
            if bad and response.status == 200 and not response.drop_connection:
                self.counters.add(f"fault:{bad}")
                return _corrupt_token_response(bad, response)
            return response
        if path == "/oauth2/revoke":
            self.counters.add("revoke", f"{method} /oauth2/revoke")
            return self._faulted("revoke", req) or oauth.revoke(self, req)
        if path == "/oauth2/auth":
            self.counters.add("auth", f"{method} /oauth2/auth")
            if method not in ("GET", "HEAD"):
                return _method_not_allowed("GET")
            return self._faulted("auth", req) or oauth.authorize(self, req)
        if path == "/oauth2/consent":
            self.counters.add("consent", f"{method} /oauth2/consent")
            if method != "POST":
                return _method_not_allowed("POST")
            return self._faulted("auth", req) or oauth.consent(self, req)
        if path == "/oauth2/userinfo":
            self.counters.add("userinfo", f"{method} /oauth2/userinfo")
            if method not in ("GET", "POST"):
                return _method_not_allowed("GET, POST")
            return self._faulted("userinfo", req) or oauth.userinfo(self, req)
        page = _PAGES.get((method if method != "HEAD" else "GET", path))
        if page is not None:
            self.counters.add(f"{method} {path}")
            return page(self, req)
        if any(path == p for _, p in _PAGES):
            return _method_not_allowed(", ".join(m for m, p in _PAGES if p == path))
        return _not_found()

    def _faulted(self, endpoint: str, req: Request) -> Response | None:
        """Apply the configured faults before the endpoint runs (faulted requests change nothing)."""
        faults = self.faults
        if (faults.latency_ms or faults.latency_max_ms) and endpoint in faults.latency_endpoints:
            time.sleep(faults.latency_seconds())
        if endpoint == "token" and faults.bad_token_response in BAD_TOKEN_REPLACEMENTS:
            self.counters.add(f"fault:{faults.bad_token_response}")
            return _bad_token_replacement(faults.bad_token_response)
        if endpoint == "token" and faults.html_challenge:
            self.counters.add("fault:html_challenge")
            return html_response(403, pages.challenge_page(), [("cf-mitigated", "challenge")])
        if faults.storm_429 and endpoint in faults.storm_429_endpoints:
            self.counters.add("fault:429")
            return api.rate_limited(faults.retry_after, int(self.settings.rate_limit_code))
        if endpoint in faults.error_5xx_endpoints and faults.roll(faults.error_5xx_rate):
            status = faults.pick_5xx()
            self.counters.add(f"fault:{status}")
            return _server_error(endpoint, status, faults.retry_after)
        if endpoint == "revoke" and faults.roll(faults.revoke_503):
            self.counters.add("fault:revoke_503")
            return oauth.oauth_error(
                503,
                "temporarily_unavailable",
                "The revocation service is temporarily unavailable.",
                [("Retry-After", str(faults.retry_after))],
            )
        if endpoint == "revoke" and faults.revoke_400:
            self.counters.add("fault:revoke_400")
            return oauth.oauth_error(400, "unsupported_token_type", "The token type is not supported.")
        return None


def _server_error(endpoint: str, status: int, retry_after: int) -> Response:
    """5xx answers as Cloudflare gives them: HTML from the edge (502), JSON from the origin (500/503)."""
    if status == 502:
        return html_response(502, pages.edge_error_page(502))
    headers = [("Retry-After", str(retry_after))] if status == 503 else []
    if endpoint == "api":
        response = api.api_error(
            status,
            10001 if status == 500 else 10013,
            "Internal server error" if status == 500 else "Service temporarily unavailable",
        )
        response.headers.extend(headers)
        return response
    error = "server_error" if status == 500 else "temporarily_unavailable"
    return oauth.oauth_error(status, error, "The authorization server encountered an unexpected condition.", headers)


def _bad_token_replacement(mode: str) -> Response:
    """A token-endpoint answer no client should accept (the request itself is not processed)."""
    if mode == "html_200":
        return html_response(200, "<!doctype html><html><body><h1>Welcome to Cloudflare</h1></body></html>")
    if mode == "non_json":
        return Response(200, b"OK", [("Content-Type", "text/plain")])
    if mode == "empty_body":
        return Response(200, b"", [("Content-Type", "application/json")])
    if mode == "error_200":
        return json_response(200, {"error": "invalid_grant", "error_description": "Reported with status 200."})
    if mode == "redirect":
        return redirect("https://evil.example/oauth2/token", status=307)
    padding = "x" * MAX_BODY
    return json_response(200, {"access_token": "cfoat_" + "A" * 43, "token_type": "bearer", "padding": padding})


def _corrupt_token_response(mode: str, response: Response) -> Response:
    """Damage one field of a real token response (the request was processed normally)."""
    payload = json.loads(response.body)
    if mode == "no_access_token":
        payload.pop("access_token", None)
    elif mode == "no_token_type":
        payload.pop("token_type", None)
    elif mode == "wrong_token_type":
        payload["token_type"] = "mac"
    elif mode == "expires_in_negative":
        payload["expires_in"] = -1
    elif mode == "expires_in_huge":
        payload["expires_in"] = 10**12
    elif mode == "expires_in_string":
        payload["expires_in"] = str(payload.get("expires_in"))
    elif mode == "narrower_scope":
        scopes = payload.get("scope", "").split(" ")
        payload["scope"] = " ".join(scopes[:-1]) if len(scopes) > 1 else ""
    return json_response(200, payload, [("Cache-Control", "no-store"), ("Pragma", "no-cache")])


def _not_found() -> Response:
    return json_response(404, {"error": "not_found", "error_description": "No such page."})


def _method_not_allowed(allow: str) -> Response:
    return json_response(405, {"error": "method_not_allowed"}, [("Allow", allow)])


_PAGES = {
    ("GET", "/"): ui.home,
    ("GET", "/login"): ui.login_get,
    ("POST", "/login"): ui.login_post,
    ("GET", "/logout"): ui.logout,
    ("GET", "/profile/connected-applications"): ui.connected_apps,
    ("POST", "/profile/connected-applications/revoke"): ui.connected_apps_revoke,
    ("GET", "/profile/accounts"): ui.accounts_get,
    ("POST", "/profile/accounts/oauth-access"): ui.accounts_post,
    ("GET", "/.well-known/openid-configuration"): oauth.discovery,
    ("GET", "/.well-known/jwks.json"): oauth.jwks,
}


class SandboxRequestHandler(BaseHTTPRequestHandler):
    """Turns raw HTTP into :class:`Request` and :class:`Response` objects."""

    protocol_version = "HTTP/1.1"
    server_version = "cloudflare"
    sys_version = ""
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    timeout = 120
    server: SandboxHTTPServer

    def version_string(self) -> str:
        """``Server: cloudflare``, as Cloudflare's edge answers."""
        return "cloudflare"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature from the base class
        """Silence the default logger: it prints the request line, query string included."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Requests are logged by :meth:`SandboxApp.log_request` instead."""

    def _handle(self) -> None:
        app = self.server.app
        started = time.perf_counter()
        target = self.path
        if target.startswith(("http://", "https://")):
            parts = urlsplit(target)
            target = parts.path + (f"?{parts.query}" if parts.query else "")
        path, _, query = target.partition("?")
        path = path.split("#", 1)[0] or "/"
        if self.headers.get("Transfer-Encoding"):
            self._send(Response(411, b"Length Required", [("Content-Type", "text/plain")]), close=True)
            app.log_request(self.command, path, 411, 0.0)
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            status = 400 if length < 0 else 413
            self._send(Response(status, b"", []), close=True)
            app.log_request(self.command, path, status, 0.0)
            return
        body = self.rfile.read(length) if length else b""
        req = Request(self.command, path, query, self.headers, body, self.client_address[0])
        try:
            response = app.handle(req)
        except Exception:  # noqa: BLE001 - a sandbox bug must answer 500, not kill the connection thread
            traceback.print_exc(file=sys.stderr)
            response = json_response(500, {"error": "server_error", "error_description": "Sandbox internal error."})
        elapsed = (time.perf_counter() - started) * 1000
        if response.drop_connection:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            app.log_request(self.command, path, "dropped", elapsed)
            return
        self._send(response)
        app.log_request(self.command, path, response.status, elapsed)

    def _send(self, response: Response, *, close: bool = False) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("CF-RAY", f"{secrets.token_hex(8)}-SBX")
        self.send_header("Content-Length", str(len(response.body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class SandboxHTTPServer(ThreadingHTTPServer):
    """Threaded server carrying the :class:`SandboxApp`."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], app: SandboxApp) -> None:
        super().__init__(address, SandboxRequestHandler)
        self.app = app

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up mid-request are normal (benchmarks, dropped connections): stay quiet."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)
