"""The one module that talks to Cloudflare: OAuth endpoints and API v4.

Every call has strict timeouts, no automatic retries (a refresh token is single-use: a blind retry
after an ambiguous failure can kill the grant), redirects refused, a cap on the response size, and
turns every answer into either a value or a typed error that says whether trying again later can
help. Nothing here logs a token, a code, a secret or a response body.

Error classes, from the caller's point of view:

- `InvalidGrant`: the refresh token / code is dead (400 *or* 401, Cloudflare's status is unknown).
- `InvalidClient`: the OAuth app's own credentials were refused: an app-wide problem.
- `OAuthError`: any other RFC 6749 error answer.
- `RateLimited`, `Unavailable`, `BadResponse`: transient; try again later (`retry_after` when known).
- `UncertainOutcome`: the request was sent, the answer never came (read timeout, connection reset).
  For a refresh this means the token may already have rotated: never retry blindly.
- `ApiError`: an API v4 envelope with `success: false`; `is_auth_error` for codes 9109 / 10000, which
  mean *either* a revoked token *or* a missing permission, so they never prove revocation alone.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import requests
from django.conf import settings

logger = logging.getLogger(__name__)

AUTH_ERROR_CODES = frozenset({9109, 10000})
RATE_LIMIT_CODE = 971
# Sanity bounds for `expires_in` (seconds): below, the token is useless; above, the answer is wrong.
MIN_EXPIRES_IN = 10
MAX_EXPIRES_IN = 90 * 24 * 3600


class CloudflareError(Exception):
    transient = False

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class OAuthError(CloudflareError):
    """An RFC 6749 error answer from the token or revoke endpoint."""

    def __init__(self, error: str, description: str = "", *, status: int | None = None) -> None:
        super().__init__(f"{error} (HTTP {status})", status=status)
        self.error = error
        # Kept for staff diagnostics; short, and never contains a token (Cloudflare's own text).
        self.description = description[:300]


class InvalidGrant(OAuthError):
    """The code or refresh token is no longer valid (revoked, expired or already used)."""


class InvalidClient(OAuthError):
    """The OAuth app's credentials were refused (`invalid_client` / `unauthorized_client`)."""


class TransientError(CloudflareError):
    transient = True


class RateLimited(TransientError):
    pass


class Unavailable(TransientError):
    """5xx, connection refused, or a connect timeout: the request did not take effect."""


class BadResponse(TransientError):
    """Not the JSON we expect: an HTML challenge page, a redirect, an oversized or malformed body."""


class UncertainOutcome(TransientError):
    """The request was sent but no answer arrived: it may or may not have taken effect."""


class ApiError(CloudflareError):
    def __init__(self, message: str, *, status: int, codes: list[int]) -> None:
        super().__init__(message, status=status)
        self.codes = codes

    @property
    def is_auth_error(self) -> bool:
        return bool(AUTH_ERROR_CODES & set(self.codes))


@dataclass(frozen=True)
class TokenResponse:
    access_token: str
    expires_in: int
    refresh_token: str = ""
    scopes: list[str] = field(default_factory=list)
    token_type: str = "bearer"

    def __repr__(self) -> str:  # never print tokens, even in a debugger or a traceback
        return f"TokenResponse(expires_in={self.expires_in}, scopes={self.scopes}, refresh_token={'yes' if self.refresh_token else 'no'})"


# --- HTTP plumbing ---------------------------------------------------------------------------------

_local = threading.local()


def _session() -> requests.Session:
    # One connection pool per thread (requests.Session is not documented as thread-safe).
    session = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        session.headers["User-Agent"] = "agency-portal/1.0"
        _local.session = session
    return session


def _timeout(read: float | None = None) -> tuple[float, float]:
    return (settings.CLOUDFLARE_CONNECT_TIMEOUT, read or settings.CLOUDFLARE_READ_TIMEOUT)


def _is_uncertain(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the connection broke after the request was sent (reset, closed without answer)."""
    text = repr(exc)
    not_sent = ("NewConnectionError", "NameResolutionError", "ConnectTimeout", "Connection refused")
    return not any(marker in text for marker in not_sent)


def _request(
    method: str, url: str, *, label: str, read_timeout: float | None = None, **kwargs: Any
) -> tuple[requests.Response, bytes]:
    """Send one request: no retries, no redirects, bounded time and size. Returns (response, body)."""
    started = time.monotonic()
    read_timeout = read_timeout or settings.CLOUDFLARE_READ_TIMEOUT
    try:
        response = _session().request(
            method, url, timeout=_timeout(read_timeout), allow_redirects=False, stream=True, **kwargs
        )
        body = _read_capped(response)
    except requests.exceptions.ConnectTimeout as exc:
        raise Unavailable(f"{label}: connect timeout") from exc
    except requests.exceptions.ReadTimeout as exc:
        raise UncertainOutcome(f"{label}: no answer within {read_timeout:g}s") from exc
    except requests.exceptions.ConnectionError as exc:
        if _is_uncertain(exc):
            raise UncertainOutcome(f"{label}: connection closed before the answer") from exc
        raise Unavailable(f"{label}: cannot connect") from exc
    except requests.exceptions.RequestException as exc:
        raise Unavailable(f"{label}: {type(exc).__name__}") from exc
    logger.debug("%s %s → %s in %.0f ms", method, label, response.status_code, (time.monotonic() - started) * 1000)
    if 300 <= response.status_code < 400:
        raise BadResponse(f"{label}: unexpected redirect (HTTP {response.status_code})", status=response.status_code)
    return response, body


def _read_capped(response: requests.Response) -> bytes:
    limit = settings.CLOUDFLARE_MAX_RESPONSE_BYTES
    chunks, size = [], 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > limit:
            response.close()
            raise BadResponse(f"response larger than {limit} bytes", status=response.status_code)
        chunks.append(chunk)
    return b"".join(chunks)


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _json(response: requests.Response, body: bytes, label: str) -> Any:
    content_type = response.headers.get("Content-Type", "")
    if "json" not in content_type.lower():
        # Cloudflare's edge answers some data-centre requests with an HTML bot challenge (403).
        raise BadResponse(
            f"{label}: expected JSON, got {content_type or 'no content type'} (HTTP {response.status_code})",
            status=response.status_code,
        )
    try:
        import json

        return json.loads(body)
    except ValueError as exc:
        raise BadResponse(
            f"{label}: malformed JSON (HTTP {response.status_code})", status=response.status_code
        ) from exc


# --- OAuth ---------------------------------------------------------------------------------------


def discovery() -> dict[str, Any]:
    """The OAuth server's metadata (`/.well-known/openid-configuration`), cached for an hour.

    Raises a TransientError when it cannot be read; callers decide what that means for them.
    """
    from django.core.cache import cache

    key = _discovery_key()
    cached = cache.get(key)
    if isinstance(cached, dict):
        return cached
    # Published under the issuer (OpenID Connect Discovery; Cloudflare: https://dash.cloudflare.com).
    url = f"{settings.CLOUDFLARE_ISSUER.rstrip('/')}/.well-known/openid-configuration"
    response, body = _request("GET", url, label="discovery")
    payload = _json(response, body, "discovery")
    if response.status_code != 200 or not isinstance(payload, dict):
        raise BadResponse(f"discovery: HTTP {response.status_code}", status=response.status_code)
    cache.set(key, payload, 3600)
    return payload


def discovery_forget() -> None:
    """Drop the cached discovery document (after the server's configuration changed)."""
    from django.core.cache import cache

    cache.delete(_discovery_key())


def _discovery_key() -> str:
    return f"cf:discovery:{settings.CLOUDFLARE_ISSUER.rstrip('/')}"


def authorize_url(*, client_id: str, redirect_uri: str, scopes: list[str], state: str, code_challenge: str) -> str:
    """The URL that sends a client contact to Cloudflare's consent screen.

    Spaces in `scope` are encoded as %20, not `+`: integrators lost `offline_access` (and so the
    refresh token) when Cloudflare read `+` literally.
    """
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(scopes),
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        },
        quote_via=quote,
    )
    return f"{settings.CLOUDFLARE_AUTHORIZE_URL}?{query}"


def consent_page(url: str) -> str | None:
    """The consent page at an authorize URL, as an anonymous browser would get it: its HTML, or
    None when Cloudflare asks to sign in first (a redirect), so the page cannot be read."""
    try:
        response, body = _request("GET", url, label="consent page", headers={"Accept": "text/html"})
    except BadResponse as exc:
        if exc.status and 300 <= exc.status < 400:
            return None
        raise
    if response.status_code != 200:
        return None
    return body.decode("utf-8", "replace")


def _client_auth(app: Any, data: dict[str, str]) -> dict[str, Any]:
    """Client authentication for token and revoke calls, by the app's registered method."""
    if app.token_endpoint_auth_method == "client_secret_post":
        data.update({"client_id": app.client_id, "client_secret": app.client_secret})
        return {"data": data}
    return {"data": data, "auth": (quote(app.client_id, safe=""), quote(app.client_secret, safe=""))}


def _oauth_error(response: requests.Response, payload: Any) -> OAuthError:
    error = str(payload.get("error", "")) if isinstance(payload, dict) else ""
    description = str(payload.get("error_description", "")) if isinstance(payload, dict) else ""
    if error == "invalid_grant":
        return InvalidGrant(error, description, status=response.status_code)
    if error in ("invalid_client", "unauthorized_client"):
        return InvalidClient(error, description, status=response.status_code)
    return OAuthError(error or "unknown_error", description, status=response.status_code)


def _token_call(app: Any, data: dict[str, str], label: str) -> TokenResponse:
    response, body = _request(
        "POST",
        settings.CLOUDFLARE_TOKEN_URL,
        label=label,
        # The token endpoint has its own, longer read timeout: a slow answer beats no answer.
        read_timeout=settings.CLOUDFLARE_TOKEN_READ_TIMEOUT,
        headers={"Accept": "application/json"},
        **_client_auth(app, data),
    )
    status = response.status_code
    if status == 429:
        raise RateLimited(f"{label}: rate limited", status=status, retry_after=_retry_after(response))
    if status >= 500:
        raise Unavailable(f"{label}: HTTP {status}", status=status, retry_after=_retry_after(response))
    payload = _json(response, body, label)
    if status != 200:
        if status in (400, 401, 403) and isinstance(payload, dict) and payload.get("error"):
            raise _oauth_error(response, payload)
        raise BadResponse(f"{label}: HTTP {status} without an OAuth error", status=status)
    return parse_token_response(payload, label=label)


def parse_token_response(payload: Any, *, label: str = "token") -> TokenResponse:
    """Validate a token response (security checklist OA-08); raise BadResponse when it is unusable."""
    if not isinstance(payload, dict):
        raise BadResponse(f"{label}: token response is not a JSON object")
    if payload.get("error"):
        raise BadResponse(f"{label}: HTTP 200 carrying an error ({str(payload['error'])[:50]})")
    access_token = payload.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise BadResponse(f"{label}: no access_token")
    token_type = payload.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise BadResponse(f"{label}: token_type is not bearer")
    expires_in = payload.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int):
        raise BadResponse(f"{label}: expires_in is not an integer")
    if not MIN_EXPIRES_IN <= expires_in <= MAX_EXPIRES_IN:
        raise BadResponse(f"{label}: expires_in {expires_in} is out of range")
    refresh_token = payload.get("refresh_token") or ""
    if not isinstance(refresh_token, str):
        raise BadResponse(f"{label}: refresh_token is not a string")
    scope = payload.get("scope", "")
    if not isinstance(scope, str):
        raise BadResponse(f"{label}: scope is not a string")
    return TokenResponse(
        access_token=access_token,
        expires_in=expires_in,
        refresh_token=refresh_token,
        scopes=scope.split(),
        token_type="bearer",
    )


def exchange_code(*, app: Any, code: str, code_verifier: str, redirect_uri: str) -> TokenResponse:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }
    return _token_call(app, data, "token (authorization_code)")


def refresh(*, app: Any, refresh_token: str) -> TokenResponse:
    """One refresh call. Callers must hold the grant's refresh claim: the token is single-use."""
    return _token_call(app, {"grant_type": "refresh_token", "refresh_token": refresh_token}, "token (refresh_token)")


def userinfo_url() -> str:
    """`CLOUDFLARE_USERINFO_URL`, or `userinfo` next to the token endpoint (Cloudflare's layout)."""
    return settings.CLOUDFLARE_USERINFO_URL or settings.CLOUDFLARE_TOKEN_URL.rsplit("/", 1)[0] + "/userinfo"


def access_token_accepted(*, access_token: str) -> bool | None:
    """Does the OAuth server still accept this access token? True, False, or None (no evidence).

    A read of the userinfo endpoint, which needs no scope beyond a valid token: 200 → accepted;
    401 → refused (revoked or expired). Any other answer says nothing (None). Raises a
    TransientError when the server cannot be asked now (5xx, 429, connection problems).
    """
    label = "userinfo (probe)"
    response, body = _request(
        "GET",
        userinfo_url(),
        label=label,
        headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
    )
    status = response.status_code
    if status == 429:
        raise RateLimited(f"{label}: rate limited", status=status, retry_after=_retry_after(response))
    if status >= 500:
        raise Unavailable(f"{label}: HTTP {status}", status=status, retry_after=_retry_after(response))
    if status == 401:
        return False
    if status == 200:
        try:
            payload = _json(response, body, label)
        except BadResponse:
            return None
        return True if isinstance(payload, dict) and payload.get("sub") else None
    return None


def revoke(*, app: Any, token: str, token_type_hint: str) -> None:
    """RFC 7009 revocation. Returns on 200 (also for an already invalid token); raises otherwise."""
    label = f"revoke ({token_type_hint})"
    response, body = _request(
        "POST",
        settings.CLOUDFLARE_REVOKE_URL,
        label=label,
        **_client_auth(app, {"token": token, "token_type_hint": token_type_hint}),
    )
    status = response.status_code
    if status == 200:
        return
    if status == 429:
        raise RateLimited(f"{label}: rate limited", status=status, retry_after=_retry_after(response))
    if status >= 500:
        raise Unavailable(f"{label}: HTTP {status}", status=status, retry_after=_retry_after(response))
    try:
        payload = _json(response, body, label)
    except BadResponse:
        raise
    raise _oauth_error(response, payload)


# --- API v4 --------------------------------------------------------------------------------------


def api_request(
    method: str, path: str, *, access_token: str, params: dict[str, Any] | None = None, json: Any = None
) -> dict[str, Any]:
    """One API v4 call; returns the whole envelope (`result`, `result_info`, ...) on success.

    The token travels only in the Authorization header, never in a URL.
    """
    label = f"API {method} {path}"
    response, body = _request(
        method,
        f"{settings.CLOUDFLARE_API_BASE_URL}{path}",
        label=label,
        params=params,
        json=json,
        headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
    )
    status = response.status_code
    if status >= 500:
        raise Unavailable(f"{label}: HTTP {status}", status=status, retry_after=_retry_after(response))
    envelope = _json(response, body, label)
    if not isinstance(envelope, dict):
        raise BadResponse(f"{label}: envelope is not an object", status=status)
    codes = [e.get("code") for e in envelope.get("errors") or [] if isinstance(e, dict)]
    if status == 429 or RATE_LIMIT_CODE in codes:
        raise RateLimited(f"{label}: rate limited", status=status, retry_after=_retry_after(response))
    if status != 200 or not envelope.get("success"):
        raise ApiError(
            f"{label}: HTTP {status}, codes {codes}", status=status, codes=[c for c in codes if isinstance(c, int)]
        )
    return envelope


def api_list(path: str, *, access_token: str, params: dict[str, Any] | None = None, per_page: int = 50) -> list[dict]:
    """Every item of a paginated list endpoint (Cloudflare's `per_page` is at most 50)."""
    items: list[dict] = []
    page = 1
    while True:
        envelope = api_request(
            "GET", path, access_token=access_token, params={**(params or {}), "page": page, "per_page": per_page}
        )
        result = envelope.get("result") or []
        if not isinstance(result, list):
            raise BadResponse(f"API GET {path}: result is not a list")
        items.extend(result)
        info = envelope.get("result_info") or {}
        total_pages = info.get("total_pages")
        if not result or not isinstance(total_pages, int) or page >= total_pages:
            return items
        page += 1


def api_list_page(
    path: str, *, access_token: str, page: int, params: dict[str, Any] | None = None, per_page: int = 50
) -> tuple[list[dict], int]:
    """One page of a paginated list endpoint: (items, total pages as Cloudflare counts them).

    For callers that read pages concurrently; `api_list` reads them one after another.
    """
    envelope = api_request(
        "GET", path, access_token=access_token, params={**(params or {}), "page": page, "per_page": per_page}
    )
    result = envelope.get("result") or []
    if not isinstance(result, list):
        raise BadResponse(f"API GET {path}: result is not a list")
    total_pages = (envelope.get("result_info") or {}).get("total_pages")
    return result, total_pages if isinstance(total_pages, int) and not isinstance(total_pages, bool) else 1


def get_user(*, access_token: str) -> dict[str, Any]:
    return api_request("GET", "/user", access_token=access_token)["result"]


def list_accounts(*, access_token: str) -> list[dict]:
    return api_list("/accounts", access_token=access_token)


def list_zones(*, access_token: str, account_id: str) -> list[dict]:
    return api_list("/zones", access_token=access_token, params={"account.id": account_id})


def list_scopes(*, access_token: str) -> list[dict]:
    return api_request("GET", "/oauth/scopes", access_token=access_token)["result"]
