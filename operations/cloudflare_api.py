"""Cloudflare API v4 for actions, through the official SDK (`cloudflare` on PyPI).

The SDK gives typed calls and models for every endpoint the catalogue uses; this module makes it
behave like the project's own client (`connections/cloudflare.py`): no hidden retries
(`max_retries=0`), the project's timeouts and API base URL, redirects refused, TLS verified, and
every HTTP request it sends (each page of a list too) counted against the per-Cloudflare-user
budget and the global cap of `connections.ratelimit` before it leaves. A 429 blocks that user for
its `Retry-After` in the shared limiter, so every worker backs off, not only the one that saw it.
OAuth token calls never come here: they stay in `connections/cloudflare.py`.

Error classes, from the caller's point of view (all subclasses of `connections.cloudflare`'s, so
code that already handles those handles these):

- `RateLimited`: 429 / code 971 / 10429, or our own budget said "not now". Nothing was sent or
  nothing applied; try later (`retry_after`).
- `Unavailable`: 5xx, connection refused, connect timeout, a non-JSON answer (HTML challenge):
  nothing applied; try later.
- `UncertainOutcome`: the request left and no answer came (read timeout, connection reset). For a
  write, it may have happened: read to find out, never retry blindly.
- `ApiError`: Cloudflare answered no (validation error, not found, ...) with its codes and messages;
  `is_auth_error` for 9109 / 10000, which mean *either* a revoked token *or* a missing permission:
  evidence for the grant's health check, never proof of revocation on its own.

Where the SDK is unfit, and what we do instead: it has no call for "all settings of a zone"
(only one setting by id), so that read uses the SDK's generic `get` on the documented path; it does
not cap response sizes (the project's own client does), which is acceptable for the bounded pages
the catalogue asks for (at most 100 items).
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
from typing import TYPE_CHECKING, Any

import cloudflare as sdk
import httpx
from django.conf import settings

from connections import ratelimit
from connections.cloudflare import (
    AUTH_ERROR_CODES,
    ApiError,
    CloudflareError,
    RateLimited,
    TransientError,
    Unavailable,
    UncertainOutcome,
)

if TYPE_CHECKING:
    from connections.models import Grant

logger = logging.getLogger(__name__)

__all__ = [
    "AUTH_ERROR_CODES",
    "ApiError",
    "CloudflareError",
    "RateLimited",
    "TransientError",
    "Unavailable",
    "UncertainOutcome",
    "api_for_grant",
    "api_for_token",
    "classify",
]

# Cloudflare's rate-limit answers: 971 (API v4 envelope) and 10429 (seen on some products).
RATE_LIMIT_CODES = frozenset({971, 10429})
NOT_FOUND_CODES = frozenset({81044, 7003, 1001})


class BudgetExhausted(RateLimited):
    """Our own budget for this Cloudflare user (or the global cap) said "not now": nothing was sent."""


def _timeout() -> httpx.Timeout:
    return httpx.Timeout(
        connect=settings.CLOUDFLARE_CONNECT_TIMEOUT,
        read=settings.CLOUDFLARE_READ_TIMEOUT,
        write=settings.CLOUDFLARE_READ_TIMEOUT,
        pool=settings.CLOUDFLARE_CONNECT_TIMEOUT,
    )


def _budget_hook(user_key: str):
    def take_slot(request: httpx.Request) -> None:
        # Every request, page by page: the SDK's auto-pagination would otherwise spend the budget
        # unseen. Waits a little (bounded) rather than failing at the first busy second.
        if not ratelimit.wait_for_slot(user_key=user_key, max_wait=settings.CLOUDFLARE_RATELIMIT_MAX_WAIT):
            raise BudgetExhausted("request budget for this Cloudflare user is used up", retry_after=5.0)

    return take_slot


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process (CA bundle loaded once, not on every action: loading
    it costs about 20 ms of CPU). Certificates and host names are always checked."""
    import certifi

    context = ssl.create_default_context(cafile=certifi.where())
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    return context


class _SharedTransport(httpx.HTTPTransport):
    """The process's pool of connections to Cloudflare, kept across actions: a bulk change or a
    staff page pays the TCP and TLS handshakes once per process, not once per action. Closing an SDK
    client leaves it open (it belongs to the process)."""

    def close(self) -> None:
        pass


_transports: dict[int, _SharedTransport] = {}


def _shared_transport() -> _SharedTransport:
    # Per process id: a worker forked from a parent that already held connections opens its own.
    pid = os.getpid()
    transport = _transports.get(pid)
    if transport is None:
        transport = _SharedTransport(verify=_tls_context(), limits=httpx.Limits(max_keepalive_connections=20))
        _transports.clear()
        _transports[pid] = transport
    return transport


def api_for_grant(*, grant: Grant) -> sdk.Cloudflare:
    """An SDK client acting with the grant's access token. The caller closes it (`with` works).

    The token is read here, once, from the encrypted column; it travels only in the
    Authorization header and is never logged (the SDK logs method and URL only).
    """
    return api_for_token(token=grant.access_token, user_key=grant.cf_user_id)


def api_for_token(*, token: str, user_key: str) -> sdk.Cloudflare:
    """An SDK client acting with a client's API token (before cutover), like `api_for_grant`:
    the same timeouts, no retries, redirects refused, and its own request budget (`user_key`)."""
    http_client = httpx.Client(
        timeout=_timeout(),
        follow_redirects=False,
        transport=_shared_transport(),
        headers={"User-Agent": "agency-portal/1.0"},
        event_hooks={"request": [_budget_hook(user_key)]},
    )
    api = sdk.Cloudflare(
        api_token=token,
        base_url=settings.CLOUDFLARE_API_BASE_URL,
        max_retries=0,
        timeout=_timeout(),
        http_client=http_client,
    )
    # Whose budget a 429 blocks, for `classify()` in the executors.
    api._agency_user_key = user_key
    return api


def _retry_after(response: httpx.Response | None) -> float | None:
    if response is None:
        return None
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


def _errors(body: Any) -> list[dict[str, Any]]:
    """Cloudflare's `errors` (with nested `error_chain`), as [{code, message}], codes as ints."""
    found: list[dict[str, Any]] = []

    def walk(items: Any) -> None:
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict):
                code = item.get("code")
                found.append(
                    {"code": code if isinstance(code, int) else None, "message": str(item.get("message", ""))[:300]}
                )
                walk(item.get("error_chain"))

    walk(body.get("errors") if isinstance(body, dict) else None)
    return found


class CloudflareApiError(ApiError):
    """`ApiError` with Cloudflare's messages kept (short, Cloudflare's own words, never a token)."""

    def __init__(self, message: str, *, status: int, errors: list[dict[str, Any]]) -> None:
        super().__init__(message, status=status, codes=[e["code"] for e in errors if e["code"] is not None])
        self.errors = errors

    @property
    def is_not_found(self) -> bool:
        return self.status == 404 or bool(NOT_FOUND_CODES & set(self.codes))


def classify(exc: Exception, *, user_key: str, method: str = "GET") -> CloudflareError:
    """Turn an SDK exception into the project's error classes (see the module docstring).

    A 429 blocks the user in the shared limiter here, so the `Retry-After` is honoured by every
    worker. `method` decides what a broken connection means: a GET that got no answer changed
    nothing; a write that got no answer may have.
    """
    if isinstance(exc, CloudflareError):
        return exc
    cause = exc.__cause__
    if isinstance(cause, CloudflareError):  # raised by our own request hook (the budget)
        return cause
    if isinstance(exc, sdk.APITimeoutError):
        if isinstance(cause, (httpx.ConnectTimeout, httpx.PoolTimeout)) or method == "GET":
            return Unavailable("Cloudflare did not answer in time (nothing was changed)")
        return UncertainOutcome("Cloudflare did not answer in time: the change may or may not have been applied")
    if isinstance(exc, sdk.APIConnectionError):
        if isinstance(cause, httpx.ConnectError) or method == "GET":
            return Unavailable("Cannot reach Cloudflare")
        return UncertainOutcome(
            "The connection to Cloudflare broke before the answer: the change may have been applied"
        )
    if isinstance(exc, sdk.APIStatusError):
        response = exc.response
        status = exc.status_code
        errors = _errors(exc.body)
        codes = {e["code"] for e in errors}
        if status == 429 or RATE_LIMIT_CODES & codes:
            wait = _retry_after(response) or 60.0
            ratelimit.block(user_key=user_key, seconds=wait)
            return RateLimited("Cloudflare's rate limit for this user was reached", status=status, retry_after=wait)
        if status >= 500:
            return Unavailable(
                f"Cloudflare is unavailable (HTTP {status})", status=status, retry_after=_retry_after(response)
            )
        if not isinstance(exc.body, dict):
            # An HTML challenge page or a proxy's error page: not Cloudflare's API answering.
            return Unavailable(f"Cloudflare answered with something other than JSON (HTTP {status})", status=status)
        message = "; ".join(e["message"] for e in errors if e["message"]) or f"HTTP {status}"
        return CloudflareApiError(message, status=status, errors=errors)
    if isinstance(exc, sdk.APIResponseValidationError):
        return Unavailable("Cloudflare's answer was not what the API describes")
    raise exc  # a programming error: let it surface


def is_auth_error(error: CloudflareError) -> bool:
    return isinstance(error, ApiError) and error.is_auth_error
