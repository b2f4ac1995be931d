"""Helpers for tests: run the sandbox as a subprocess and drive its OAuth flow over HTTP.

``SandboxProcess`` starts ``python -m cloudflare_sandbox`` on a free port with a temporary database
and the control endpoint enabled, exactly as a developer would run it, so tests exercise the same
HTTP surface the portal uses. ``run_authorization`` plays the user in the browser (login form, then
consent form with its CSRF token) and stops at the redirect back to the client. Only the standard
library and ``requests`` are used.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit

import requests

from .seed import ALICE_EMAIL, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_REDIRECT_URIS, SANDBOX_PASSWORD

__all__ = [
    "AuthorizeResult",
    "SandboxError",
    "SandboxProcess",
    "authorize_url",
    "exchange_code",
    "pkce_pair",
    "refresh_tokens",
    "run_authorization",
    "sha256_hex",
]

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"Cloudflare sandbox listening on (http://\S+)")


class SandboxError(RuntimeError):
    """The sandbox did not start, or a control call failed."""


def sha256_hex(value: str) -> str:
    """Hex SHA-256, the form in which ground truth reports tokens."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def pkce_pair() -> tuple[str, str]:
    """A fresh (code_verifier, S256 code_challenge) pair."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class SandboxProcess:
    """A sandbox subprocess; use as a context manager.

    ``restart()`` keeps the database and port, so tokens and grants survive like a real restart.
    """

    def __init__(
        self,
        *,
        enable_control: bool = True,
        db_path: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        access_ttl: int | None = None,
        issuer: str | None = None,
        settings: dict[str, Any] | None = None,
        quiet: bool = True,
        env: dict[str, str] | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self.enable_control = enable_control
        self.host = host
        self.port = port
        self.access_ttl = access_ttl
        self._issuer_arg = issuer
        self.initial_settings = settings
        self.quiet = quiet
        self.extra_env = env or {}
        self.startup_timeout = startup_timeout
        self._tmpdir = tempfile.mkdtemp(prefix="cf-sandbox-")
        self.db_path = str(db_path) if db_path else os.path.join(self._tmpdir, "sandbox.sqlite3")
        self.log_path = os.path.join(self._tmpdir, "sandbox.log")
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self.base_url = ""
        self.http = requests.Session()

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self._tmpdir, ignore_errors=True)

    @property
    def issuer(self) -> str:
        """The issuer the sandbox puts in discovery and on callbacks."""
        return (self._issuer_arg or self.base_url).rstrip("/")

    @property
    def api_url(self) -> str:
        """Base URL of API v4 (``…/client/v4``)."""
        return f"{self.base_url}/client/v4"

    def start(self) -> SandboxProcess:
        """Start the process and wait until discovery answers."""
        if self._proc is not None:
            return self
        args = [
            sys.executable,
            "-m",
            "cloudflare_sandbox",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--db",
            self.db_path,
        ]
        if self.enable_control:
            args.append("--enable-control")
        if self.quiet:
            args.append("--quiet")
        if self.access_ttl is not None:
            args += ["--access-ttl", str(self.access_ttl)]
        if self._issuer_arg:
            args += ["--issuer", self._issuer_arg]
        if self.initial_settings:
            import json

            args += ["--settings", json.dumps(self.initial_settings)]
        env = {**os.environ, **self.extra_env, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
        for name in (
            "CF_SANDBOX_PORT",
            "CF_SANDBOX_HOST",
            "CF_SANDBOX_DB",
            "CF_SANDBOX_ENABLE_CONTROL",
            "CF_SANDBOX_ISSUER",
            "CF_SANDBOX_QUIET",
            "CF_SANDBOX_SETTINGS",
            "CF_SANDBOX_ACCESS_TTL",
        ):
            if name not in self.extra_env:
                env.pop(name, None)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self._log_offset = log.tell()
        try:
            self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self._tmpdir)
        finally:
            log.close()
        deadline = time.monotonic() + self.startup_timeout
        while not self.base_url or self.port == 0:
            match = _LISTENING.search(self.log_text())
            if match:
                self.base_url = match.group(1)
                self.port = int(urlsplit(self.base_url).port or 0)
                break
            self._check_alive(deadline)
            time.sleep(0.02)
        while True:
            try:
                if requests.get(f"{self.base_url}/.well-known/openid-configuration", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            self._check_alive(deadline)
            time.sleep(0.02)
        self.http = requests.Session()
        return self

    def _check_alive(self, deadline: float) -> None:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise SandboxError(f"the sandbox exited with {self._proc.returncode}:\n{self.log_text()[-4000:]}")
        if time.monotonic() > deadline:
            self.stop()
            raise SandboxError(f"the sandbox did not start in time:\n{self.log_text()[-4000:]}")

    def log_text(self) -> str:
        """Everything the process printed since the last start."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(self._log_offset)
                return handle.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """Terminate the process (the database stays)."""
        proc, self._proc = self._proc, None
        self.http.close()
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self) -> SandboxProcess:
        """Stop and start again on the same port with the same database."""
        self.stop()
        base = self.base_url
        self.base_url = ""
        try:
            return self.start()
        finally:
            if not self.base_url:
                self.base_url = base

    # ------------------------------------------------------------------- control

    def control(self, method: str, path: str, json: Any = None, *, params: dict[str, Any] | None = None) -> Any:
        """Call the control endpoint; raises :class:`SandboxError` on an error status."""
        path = path if path.startswith("/__sandbox__") else "/__sandbox__/" + path.lstrip("/")
        response = self.http.request(method, self.base_url + path, json=json, params=params, timeout=60)
        if response.status_code >= 400:
            raise SandboxError(f"{method} {path} -> {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None

    def state(self, **filters: str) -> dict[str, Any]:
        """Ground truth: grants, reuse count, calls per endpoint (optional filters, see README)."""
        return self.control("GET", "state", params=filters or None)

    def grant(self, grant_id: str) -> dict[str, Any]:
        """Ground truth for one grant."""
        return self.control("GET", f"grants/{grant_id}")

    def grant_for_token(self, token: str) -> dict[str, Any]:
        """The grant an access or refresh token belongs to."""
        grants = self.state(token_sha256=sha256_hex(token))["grants"]
        if not grants:
            raise SandboxError("no grant holds this token")
        return grants[0]

    def calls(self) -> dict[str, int]:
        """Calls per endpoint since the last counter reset."""
        return self.state()["calls"]

    def writes(self, **filters: Any) -> list[dict[str, Any]]:
        """Ground truth: every DNS create / update / delete, purge and zone-setting change, oldest
        first, with the grant (``grant_id``) and token (``token_sha256``) that made it. Filters:
        ``kind``, ``zone_id``, ``record_id``, ``setting_id``, ``grant_id``, ``api_token_id``,
        ``token_sha256``, ``user_id``, ``since_id``."""
        return self.control("GET", "writes", params={k: str(v) for k, v in filters.items()} or None)

    def revoke_after_calls(
        self, calls: int, *, count: str = "grant", grants: list[str] | None = None, **other_faults: Any
    ) -> dict[str, Any]:
        """Fault: revoke a grant once it has made ``calls`` API calls (``count="grant"``, each
        grant counted on its own) or once ``calls`` API calls were made in total
        (``count="global"``). ``grants`` limits it to those grant ids. Replaces the other faults."""
        return self.set_faults(
            revoke_after_calls=calls, revoke_after_count=count, revoke_after_grants=grants or [], **other_faults
        )

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Replace the fault configuration."""
        return self.control("POST", "faults", json=faults)

    def clear_faults(self) -> dict[str, Any]:
        """Switch all faults off."""
        return self.control("DELETE", "faults")

    def settings(self, **changes: Any) -> dict[str, Any]:
        """Change settings (none given: just read them)."""
        if not changes:
            return self.control("GET", "settings")
        return self.control("POST", "settings", json=changes)

    def reset_settings(self) -> dict[str, Any]:
        """Back to the start-up settings."""
        return self.control("DELETE", "settings")

    def reset_counters(self) -> None:
        """Zero call counters, the reuse total and rate-limit windows."""
        self.control("POST", "reset-counters")

    def reset(self) -> None:
        """Wipe and reseed everything."""
        self.control("POST", "reset")

    def set_clock(self, offset: float = 0.0) -> None:
        """Set the sandbox clock offset in seconds."""
        self.control("POST", "clock", json={"offset": offset})

    def advance_clock(self, seconds: float) -> None:
        """Move the sandbox clock forward (ages codes and tokens without sleeping)."""
        self.control("POST", "clock", json={"advance": seconds})

    def register_client(self, **client: Any) -> dict[str, Any]:
        """Create or update an OAuth client; returns ``client_id`` and ``client_secret``."""
        return self.control("POST", "clients", json=client)

    def delete_client(self, client_id: str) -> dict[str, Any]:
        """Delete a client: all its grants die (reason ``client_deleted``)."""
        return self.control("DELETE", f"clients/{quote(client_id, safe='')}")

    def mint_grants(self, **spec: Any) -> list[dict[str, Any]]:
        """Create grants with tokens directly (``count`` of them)."""
        return self.control("POST", "grants", json=spec)

    def revoke_grant(self, grant_id: str, reason: str = "user") -> dict[str, Any]:
        """Revoke a grant as the user would from Connected applications."""
        return self.control("POST", f"grants/{grant_id}/revoke", json={"reason": reason})

    def set_account_oauth_access(self, account_id: str, enabled: bool) -> dict[str, Any]:
        """Switch "Public OAuth App access" for an account."""
        return self.control("POST", f"accounts/{account_id}/oauth-access", json={"enabled": enabled})

    def create_api_token(self, **spec: Any) -> dict[str, Any]:
        """Issue a user API token (``cfut_``): ``permissions`` (group names) over ``zones`` or
        ``accounts``, or explicit ``policies``; ``status``, ``expires_in``, ``not_before_in``."""
        return self.control("POST", "api-tokens", json=spec)

    def create_account_token(self, account_id: str, **spec: Any) -> dict[str, Any]:
        """Issue an account-owned API token (``cfat_``) limited to ``account_id``."""
        return self.control("POST", "api-tokens", json={"account_id": account_id, **spec})

    def api_tokens(self) -> list[dict[str, Any]]:
        """Ground truth: every API token as ``GET /user/tokens/{id}`` shows it, plus its owner."""
        return self.control("GET", "api-tokens")

    def delete_api_token(self, token_id: str) -> dict[str, Any]:
        """Delete a token as its owner would in the dashboard."""
        return self.control("DELETE", f"api-tokens/{token_id}")

    def add_user(self, **spec: Any) -> dict[str, Any]:
        """Add a user with new accounts and zones."""
        return self.control("POST", "users", json=spec)

    # ------------------------------------------------------------------ OAuth use

    def authorize_url(self, **kwargs: Any) -> str:
        """``authorize_url`` for this sandbox."""
        return authorize_url(self.base_url, **kwargs)

    def token_url(self) -> str:
        """The token endpoint."""
        return f"{self.base_url}/oauth2/token"

    def connect(
        self,
        *,
        email: str = ALICE_EMAIL,
        scope: str | list[str] | None = None,
        client_id: str = DEMO_CLIENT_ID,
        client_secret: str = DEMO_CLIENT_SECRET,
        redirect_uri: str = DEMO_REDIRECT_URIS[0],
        account_mode: str = "all",
        accounts: list[str] | None = None,
        optional_scopes: list[str] | None = None,
    ) -> dict[str, Any]:
        """Full flow (authorize, consent, code exchange); returns the token response JSON."""
        verifier, challenge = pkce_pair()
        url = self.authorize_url(client_id=client_id, redirect_uri=redirect_uri, scope=scope, code_challenge=challenge)
        result = run_authorization(
            url, email=email, account_mode=account_mode, accounts=accounts, optional_scopes=optional_scopes
        )
        code = result.params.get("code")
        if not code:
            raise SandboxError(f"authorization failed: {result.params or result.status}")
        response = exchange_code(
            self.base_url,
            code,
            verifier=verifier,
            redirect_uri=redirect_uri,
            client_id=client_id,
            client_secret=client_secret,
        )
        if response.status_code != 200:
            raise SandboxError(f"code exchange failed: {response.status_code} {response.text}")
        return response.json()


# ----------------------------------------------------------------------------- OAuth flow helpers


def authorize_url(
    base_url: str,
    *,
    client_id: str = DEMO_CLIENT_ID,
    redirect_uri: str | None = DEMO_REDIRECT_URIS[0],
    scope: str | list[str] | None = None,
    state: str | None = None,
    code_challenge: str | None = None,
    code_challenge_method: str | None = "S256",
    response_type: str = "code",
    extra: dict[str, str] | None = None,
) -> str:
    """An authorize URL with spaces in ``scope`` encoded as ``%20`` (never ``+``)."""
    from .seed import DEMO_OPTIONAL_SCOPES, DEMO_SCOPES

    if scope is None:
        scope = [*DEMO_SCOPES, *DEMO_OPTIONAL_SCOPES]
    scope_text = scope if isinstance(scope, str) else " ".join(scope)
    params: list[tuple[str, str]] = [("response_type", response_type), ("client_id", client_id)]
    if redirect_uri is not None:
        params.append(("redirect_uri", redirect_uri))
    params.append(("scope", scope_text))
    params.append(("state", state if state is not None else secrets.token_urlsafe(16)))
    if code_challenge is not None:
        params.append(("code_challenge", code_challenge))
        if code_challenge_method is not None:
            params.append(("code_challenge_method", code_challenge_method))
    params.extend((extra or {}).items())
    return f"{base_url.rstrip('/')}/oauth2/auth?{urlencode(params, quote_via=quote, safe='')}"


class _FormParser(HTMLParser):
    """Collects the inputs of the login and consent forms."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[str, dict[str, Any]] = {}
        self._current: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = {"action": a.get("action", ""), "inputs": []}
            self.forms[a.get("id", f"form{len(self.forms)}")] = self._current
        elif tag in ("input", "button") and self._current is not None:
            self._current["inputs"].append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


@dataclass
class AuthorizeResult:
    """Where the authorization flow stopped."""

    status: int
    location: str | None
    params: dict[str, str]
    response: requests.Response
    session: requests.Session
    pages: list[str] = field(default_factory=list)


def run_authorization(
    url: str,
    *,
    email: str = ALICE_EMAIL,
    password: str = SANDBOX_PASSWORD,
    decision: str = "authorize",
    account_mode: str = "all",
    accounts: list[str] | None = None,
    optional_scopes: list[str] | None = None,
    session: requests.Session | None = None,
    csrf_token: str | None = None,
    max_steps: int = 10,
) -> AuthorizeResult:
    """Play the user: follow redirects inside the sandbox, log in, answer the consent form.

    Stops at the first redirect that leaves the sandbox (the callback) or at a page it cannot
    handle (an error page). ``optional_scopes=None`` keeps the default (all ticked); a list ticks
    exactly those. ``csrf_token`` overrides the form's token (to test CSRF protection).
    """
    http = session or requests.Session()
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
    response = http.get(url, allow_redirects=False, timeout=30)
    seen: list[str] = []
    for _ in range(max_steps):
        if response.is_redirect:
            location = urljoin(response.url, response.headers["Location"])
            if not location.startswith(origin + "/"):
                return AuthorizeResult(
                    response.status_code, location, dict(parse_qsl(urlsplit(location).query)), response, http, seen
                )
            response = http.get(location, allow_redirects=False, timeout=30)
            continue
        if response.status_code not in (200,) or "text/html" not in response.headers.get("Content-Type", ""):
            break
        parser = _FormParser()
        parser.feed(response.text)
        seen.append(response.url)
        if "login-form" in parser.forms:
            form = parser.forms["login-form"]
            data = {i["name"]: i.get("value", "") for i in form["inputs"] if i.get("type") == "hidden"}
            data.update(email=email, password=password)
            response = http.post(urljoin(response.url, form["action"]), data=data, allow_redirects=False, timeout=30)
            continue
        if "consent" in parser.forms:
            form = parser.forms["consent"]
            data_list = [(i["name"], i.get("value", "")) for i in form["inputs"] if i.get("type") == "hidden"]
            if csrf_token is not None:
                data_list = [(k, csrf_token if k == "csrf_token" else v) for k, v in data_list]
            data_list.append(("account_mode", account_mode))
            for account in accounts or []:
                data_list.append(("account", account))
            if optional_scopes is None:
                optional_scopes = [i["value"] for i in form["inputs"] if i.get("name") == "optional_scope"]
            for scope in optional_scopes:
                data_list.append(("optional_scope", scope))
            data_list.append(("decision", decision))
            response = http.post(
                urljoin(response.url, form["action"]), data=data_list, allow_redirects=False, timeout=30
            )
            continue
        break
    return AuthorizeResult(response.status_code, None, {}, response, http, seen)


def exchange_code(
    base_url: str,
    code: str,
    *,
    verifier: str | None,
    redirect_uri: str | None = DEMO_REDIRECT_URIS[0],
    client_id: str = DEMO_CLIENT_ID,
    client_secret: str = DEMO_CLIENT_SECRET,
    auth_method: str = "basic",
    session: requests.Session | None = None,
) -> requests.Response:
    """``grant_type=authorization_code`` with ``client_secret_basic`` (default) or ``client_secret_post``."""
    data = {"grant_type": "authorization_code", "code": code}
    if redirect_uri is not None:
        data["redirect_uri"] = redirect_uri
    if verifier is not None:
        data["code_verifier"] = verifier
    return _token_call(base_url, data, client_id, client_secret, auth_method, session)


def refresh_tokens(
    base_url: str,
    refresh_token: str,
    *,
    client_id: str = DEMO_CLIENT_ID,
    client_secret: str = DEMO_CLIENT_SECRET,
    auth_method: str = "basic",
    session: requests.Session | None = None,
) -> requests.Response:
    """``grant_type=refresh_token``."""
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return _token_call(base_url, data, client_id, client_secret, auth_method, session)


def _token_call(
    base_url: str,
    data: dict[str, str],
    client_id: str,
    client_secret: str,
    auth_method: str,
    session: requests.Session | None,
) -> requests.Response:
    http = session or requests
    auth = None
    if auth_method == "basic":
        auth = (quote(client_id, safe=""), quote(client_secret, safe=""))
    elif auth_method == "post":
        data = {**data, "client_id": client_id, "client_secret": client_secret}
    return http.post(f"{base_url.rstrip('/')}/oauth2/token", data=data, auth=auth, timeout=30)
