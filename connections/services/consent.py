"""Consent: authorization requests, the OAuth callback, and creating (or replacing) a grant.

The callback is the one place where input from the outside world turns into tokens, so it is
ordered to make every rejection cheap and final:

1. Reject malformed input (oversized, non-UTF-8, control characters, repeated parameters).
2. Find the attempt by SHA-256(state); unknown → rejected, nothing recorded against any client.
3. Check the session binding and the user: an attempt started elsewhere is rejected and left
   untouched (its owner may still finish it).
4. Consume the attempt with a compare-and-set UPDATE. Only the caller whose UPDATE changed the row
   continues, so a replayed or double-submitted callback makes exactly one token request.
5. `iss` (when present), then `error`, then `code`: each failure finishes the attempt with its own
   event kind and outcome, before any token call.
6. Outside any transaction: exchange the code, then read the user, accounts and zones
   concurrently (`_read_reach`): the callback costs the token call and about one more round trip.
7. In one transaction: replace the previous live grant of the same Cloudflare user (if any), store
   the grant, its accounts and zones, events and alerts; enqueue the revocation of the replaced
   grant after commit.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from clients.models import Client, ClientMember, CloudflareAccount, Zone

from .. import cloudflare
from ..models import LIVE_STATUSES, Alert, AuthorizationRequest, Grant, GrantEvent, OAuthApp
from ..scopes import OFFLINE_ACCESS
from .events import alert_open, event_record

logger = logging.getLogger(__name__)

SESSION_BINDING_KEY = "cf_consent_binding"
SESSION_RESULT_KEY = "cf_consent_result"

# A Cloudflare callback carries a code, a state, a scope list, maybe iss and an error text: a few
# hundred bytes. Anything far larger is not from Cloudflare.
MAX_CALLBACK_QUERY_BYTES = 8 * 1024
MAX_PARAM_CHARS = 2048
CALLBACK_PARAMS = ("code", "state", "scope", "iss", "error", "error_description", "error_uri")
# Shortest time to the first refresh, whatever `expires_in` says (seconds).
MIN_REFRESH_DELAY = 30


class Result:
    """What the contact is told after a callback (the key of a message in the templates)."""

    CONNECTED = "connected"
    PARTIAL = "partial"  # optional scope declined: grant kept
    SCOPE_MISSING = "scope_missing"  # a required scope absent
    NO_REFRESH = "no_refresh"  # no refresh token: works until the access token expires
    CANCELLED = "cancelled"
    INVALID_SCOPE = "invalid_scope"
    UPSTREAM = "upstream"
    PRODUCT = "product"
    EXPIRED = "expired"
    REPLAYED = "replayed"
    REJECTED = "rejected"


@dataclass
class CallbackResult:
    result: str
    authorization_request: AuthorizationRequest | None = None
    grant: Grant | None = None
    reason: str = ""


@dataclass(frozen=True)
class ConsentStart:
    authorization_request: AuthorizationRequest
    url: str = field(repr=False)  # carries the state


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def pkce_pair() -> tuple[str, str]:
    """A fresh PKCE verifier (86 chars from 64 CSPRNG bytes; RFC 7636 allows 43-128) and its S256 challenge."""
    verifier = secrets.token_urlsafe(64)
    return verifier, pkce_challenge(verifier)


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def session_binding(session) -> str:
    """The random value that binds consent attempts to this browser session (created on first use)."""
    value = session.get(SESSION_BINDING_KEY)
    if not value:
        value = secrets.token_urlsafe(32)
        session[SESSION_BINDING_KEY] = value
    return value


def oauth_app_default() -> OAuthApp | None:
    return OAuthApp.objects.filter(is_default=True, is_active=True).first()


def missing_scopes(*, grant: Grant) -> list[str]:
    """Scopes of the app's full request that this grant does not have (required first)."""
    granted = set(grant.granted_scopes)
    wanted = [*grant.app.required_scopes, *grant.app.optional_scopes]
    return [s for s in dict.fromkeys(wanted) if s not in granted and s != OFFLINE_ACCESS]


def requested_scopes_for(*, app: OAuthApp, purpose: str, grant: Grant | None = None) -> list[str]:
    """offline_access first, always; then the app's scopes.

    "Grant the missing permissions" asks for only the missing ones when
    CLOUDFLARE_INCREMENTAL_CONSENT is on. It is off by default because whether Cloudflare merges an
    incremental consent into the earlier one is unknown, and its OAuth server (Hydra) issues each
    consent its own token with exactly the scopes of that consent: a token for the missing scopes
    alone could not even read the user, and replacing the grant with it would lose every
    permission granted before. So by default the request repeats the full list (the earlier
    choices stay ticked on Cloudflare's screen) and the pre-consent page shows what is new.
    """
    if (
        purpose == AuthorizationRequest.Purpose.ADD_SCOPES
        and grant is not None
        and settings.CLOUDFLARE_INCREMENTAL_CONSENT
    ):
        return [OFFLINE_ACCESS, *missing_scopes(grant=grant)]
    return app.all_scopes


class TooManyAttempts(Exception):
    """Consent starts are limited per contact and per client (a flood of attempts is refused)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _consent_start_allowed(*, client: Client, user: AbstractBaseUser) -> None:
    """Count this start against the contact's and the client's windows; raise when over the limit.

    Counters live in the shared cache (Redis in production), so every web process sees them.
    """
    from django.core.cache import cache

    window = settings.CONSENT_START_WINDOW
    bucket = int(timezone.now().timestamp() // window)
    for key, limit, message in (
        (
            f"consent-start:user:{user.pk}:{bucket}",
            settings.CONSENT_START_LIMIT_PER_CONTACT,
            gettext(
                "You have started connecting many times in a few minutes. Please wait a few minutes, then try again."
            ),
        ),
        (
            f"consent-start:client:{client.pk}:{bucket}",
            settings.CONSENT_START_LIMIT_PER_CLIENT,
            gettext(
                "Your organisation has started connecting many times in a few minutes. Please wait a few minutes, "
                "then try again."
            ),
        ),
    ):
        cache.add(key, 0, window * 2)
        try:
            count = cache.incr(key)
        except ValueError:  # evicted between add and incr
            cache.set(key, 1, window * 2)
            count = 1
        if count > limit:
            raise TooManyAttempts(message)


def _iss_required(app: OAuthApp) -> bool:
    """RFC 9207: must the callback carry `iss`? From the app's policy and the server's discovery."""
    if app.iss_policy == OAuthApp.IssPolicy.ALWAYS:
        return True
    if app.iss_policy == OAuthApp.IssPolicy.NEVER:
        return False
    try:
        return bool(cloudflare.discovery().get("authorization_response_iss_parameter_supported"))
    except cloudflare.CloudflareError as exc:
        # Unknown (discovery unreadable): checked when present, as before; said in the log.
        logger.warning("Cloudflare discovery unavailable, iss checked only when present: %s", exc)
        return False


def authorization_request_start(
    *,
    app: OAuthApp,
    client: Client,
    user: AbstractBaseUser,
    session,
    purpose: str = AuthorizationRequest.Purpose.CONNECT,
    replaces_grant: Grant | None = None,
    scopes: list[str] | None = None,
) -> ConsentStart:
    """Create one consent attempt and return the Cloudflare URL to send the contact to.

    Only SHA-256(state) is stored; the state itself travels in the URL and comes back on the
    callback. The verifier is stored encrypted and never leaves the server except in the token call.
    Raises TooManyAttempts (nothing created) when the contact or the client started too many.
    `scopes`: an exact request (the migration off an API token asks for the token's mapped scopes);
    by default the app's scopes for the purpose.
    """
    _consent_start_allowed(client=client, user=user)
    iss_required = _iss_required(app)
    state = secrets.token_urlsafe(32)  # 256 bits
    verifier, challenge = pkce_pair()
    binding = session_binding(session)
    now = timezone.now()
    scopes = scopes or requested_scopes_for(app=app, purpose=purpose, grant=replaces_grant)
    with transaction.atomic():
        auth_request = AuthorizationRequest.objects.create(
            state_hash=_sha256(state),
            code_verifier=verifier,
            session_binding_hash=_sha256(binding),
            app=app,
            client=client,
            user=user,
            purpose=purpose,
            replaces_grant=replaces_grant,
            requested_scopes=scopes,
            redirect_uri=app.redirect_uri,
            expected_issuer=settings.CLOUDFLARE_ISSUER,
            iss_required=iss_required,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.AUTHORIZATION_REQUEST_TTL),
        )
        event_record(
            client=client,
            grant=replaces_grant,
            kind=GrantEvent.Kind.CONSENT_STARTED,
            actor_type=GrantEvent.Actor.CLIENT,
            actor=user,
            message=f"{purpose.replace('_', ' ').capitalize()} started",
            detail={"purpose": purpose, "scopes": scopes, "app": app.client_id},
            authorization_request=auth_request,
        )
    url = cloudflare.authorize_url(
        client_id=app.client_id, redirect_uri=app.redirect_uri, scopes=scopes, state=state, code_challenge=challenge
    )
    return ConsentStart(authorization_request=auth_request, url=url)


# --- The callback -------------------------------------------------------------------------------


def _has_control_chars(value: str) -> bool:
    return any(ord(ch) < 32 or ord(ch) == 127 or ch == "\ufffd" for ch in value)


def callback_params_check(*, raw_query: str, params: Mapping[str, list[str]]) -> str:
    """ "" when the callback query is acceptable, else the reason it is not (no lookup done yet)."""
    if len(raw_query) > MAX_CALLBACK_QUERY_BYTES:
        return "oversized"
    for name, values in params.items():
        if len(values) > 1 and name in CALLBACK_PARAMS:
            return "repeated_parameter"
        for value in values:
            if len(value) > MAX_PARAM_CHARS:
                return "oversized"
            # Django decodes invalid UTF-8 to U+FFFD; Cloudflare sends ASCII only.
            if _has_control_chars(value) or _has_control_chars(name):
                return "bad_encoding"
    return ""


def _finish(
    auth_request: AuthorizationRequest,
    *,
    outcome: str,
    kind: str,
    message: str,
    error_code: str = "",
    error_description: str = "",
    detail: dict[str, Any] | None = None,
    actor_type: str = GrantEvent.Actor.SYSTEM,
) -> None:
    """Close a consumed attempt with its outcome and record the event that explains it."""
    with transaction.atomic():
        AuthorizationRequest.objects.filter(pk=auth_request.pk).update(
            outcome=outcome, error_code=error_code[:100], error_description=error_description[:300]
        )
        auth_request.outcome, auth_request.error_code = outcome, error_code[:100]
        auth_request.error_description = error_description[:300]
        event_record(
            client=auth_request.client,
            grant=auth_request.replaces_grant,
            kind=kind,
            actor_type=actor_type,
            actor=auth_request.user if actor_type == GrantEvent.Actor.CLIENT else None,
            message=message,
            detail={"purpose": auth_request.purpose, **(detail or {})},
            authorization_request=auth_request,
        )


def _reject_consumed(auth_request: AuthorizationRequest, *, reason: str, message: str, **detail: Any) -> CallbackResult:
    """Close a consumed attempt as rejected (no token call), recording `reason` as its error code."""
    _finish(
        auth_request,
        outcome=AuthorizationRequest.Outcome.ERROR,
        kind=GrantEvent.Kind.CALLBACK_REJECTED,
        message=message,
        error_code=reason,
        detail={"reason": reason, **detail},
    )
    return CallbackResult(Result.REJECTED, auth_request, reason=reason)


def _reject_unconsumed(auth_request: AuthorizationRequest, *, reason: str, message: str) -> None:
    """Record a rejection against an attempt without touching the attempt itself."""
    event_record(
        client=auth_request.client,
        grant=auth_request.replaces_grant,
        kind=GrantEvent.Kind.CALLBACK_REJECTED,
        message=message,
        detail={"reason": reason, "purpose": auth_request.purpose},
        authorization_request=auth_request,
    )


# Callback `error` values (RFC 6749 §4.1.2.1) → (outcome, event kind, result shown).
_CALLBACK_ERRORS = {
    "access_denied": (AuthorizationRequest.Outcome.CANCELLED, GrantEvent.Kind.CONSENT_CANCELLED, Result.CANCELLED),
    "invalid_scope": (AuthorizationRequest.Outcome.DENIED, GrantEvent.Kind.INVALID_SCOPE, Result.INVALID_SCOPE),
    "server_error": (AuthorizationRequest.Outcome.ERROR, GrantEvent.Kind.UPSTREAM_FAILURE, Result.UPSTREAM),
    "temporarily_unavailable": (
        AuthorizationRequest.Outcome.ERROR,
        GrantEvent.Kind.UPSTREAM_FAILURE,
        Result.UPSTREAM,
    ),
}
# Anything else (invalid_request, unauthorized_client, unsupported_response_type, unknown values)
# says our request or our app registration is wrong: a product failure for staff to fix.
_OTHER_ERROR = (AuthorizationRequest.Outcome.DENIED, GrantEvent.Kind.PRODUCT_FAILURE, Result.PRODUCT)


def callback_handle(
    *, raw_query: str, params: Mapping[str, list[str]], session, user: AbstractBaseUser | None
) -> CallbackResult:
    """Process one OAuth callback. Never raises for bad input; every path returns a result."""
    reason = callback_params_check(raw_query=raw_query, params=params)
    if reason:
        logger.warning("OAuth callback rejected before lookup: %s", reason)
        return CallbackResult(Result.REJECTED, reason=reason)

    def one(name: str) -> str | None:
        values = params.get(name)
        return values[0] if values else None

    state = one("state")
    if not state:
        logger.warning("OAuth callback rejected: no state")
        return CallbackResult(Result.REJECTED, reason="missing_state")
    auth_request = (
        AuthorizationRequest.objects.select_related("app", "client", "user", "replaces_grant")
        .filter(state_hash=_sha256(state))
        .first()
    )
    if auth_request is None:
        logger.warning("OAuth callback rejected: unknown state")
        return CallbackResult(Result.REJECTED, reason="unknown_state")

    # Bound to the browser session and the user that started it (OA-02, OA-03).
    binding = session.get(SESSION_BINDING_KEY) if session is not None else None
    same_session = bool(binding) and secrets.compare_digest(_sha256(binding), auth_request.session_binding_hash)
    same_user = user is not None and user.is_authenticated and user.pk == auth_request.user_id
    if not (same_session and same_user):
        _reject_unconsumed(
            auth_request, reason="other_session", message="Callback arrived in a different session or for another user"
        )
        return CallbackResult(Result.REJECTED, auth_request, reason="other_session")

    now = timezone.now()
    pending = AuthorizationRequest.objects.filter(
        pk=auth_request.pk, outcome=AuthorizationRequest.Outcome.PENDING, consumed_at__isnull=True
    )
    if auth_request.outcome == AuthorizationRequest.Outcome.EXPIRED:
        # Closed by the clean-up sweep before the contact came back.
        _reject_unconsumed(auth_request, reason="expired", message="The consent link expired before it was used")
        return CallbackResult(Result.EXPIRED, auth_request, reason="expired")
    if auth_request.expires_at <= now:
        if pending.update(consumed_at=now, outcome=AuthorizationRequest.Outcome.EXPIRED, error_code="expired") == 1:
            _reject_unconsumed(auth_request, reason="expired", message="The consent link expired before it was used")
            return CallbackResult(Result.EXPIRED, auth_request, reason="expired")
        _reject_unconsumed(auth_request, reason="replayed", message="Callback replayed")
        return CallbackResult(Result.REPLAYED, auth_request, reason="replayed")
    # The compare-and-set claim: of two identical callbacks, exactly one gets 1 here.
    if pending.update(consumed_at=now) != 1:
        _reject_unconsumed(auth_request, reason="replayed", message="Callback replayed")
        auth_request.refresh_from_db(fields=["outcome", "grant"])
        return CallbackResult(Result.REPLAYED, auth_request, reason="replayed")
    auth_request.consumed_at = now

    # Still allowed to connect *now*: a contact removed, demoted to viewer, or whose client was
    # switched off while at Cloudflare gets no grant (and no token call).
    member = ClientMember.objects.filter(user_id=auth_request.user_id, client_id=auth_request.client_id).first()
    if member is None or not member.can_manage_connections or not auth_request.client.is_active:
        return _reject_consumed(
            auth_request,
            reason="not_allowed",
            message="The contact lost the right to connect before the consent came back",
            member=member is not None,
        )

    iss = one("iss")
    # A code without iss from a server that sends iss is the mix-up attack's shape (RFC 9207 §2.4):
    # refused before any token call. An error answer without it is recorded as what it says (it
    # yields no token either way).
    if iss is None and auth_request.iss_required and one("error") is None:
        return _reject_consumed(
            auth_request,
            reason="iss_missing",
            message="The callback carried no issuer (iss) though Cloudflare says it sends one",
        )
    if iss is not None and iss != auth_request.expected_issuer:
        # Plain string comparison (RFC 9207): a trailing slash or a case change is a mismatch.
        return _reject_consumed(
            auth_request,
            reason="iss_mismatch",
            message="The callback's issuer did not match the configured Cloudflare issuer",
            iss=iss[:200],
        )

    error = one("error")
    if error is not None:
        outcome, kind, result = _CALLBACK_ERRORS.get(error, _OTHER_ERROR)
        description = (one("error_description") or "")[:300]
        if kind in (GrantEvent.Kind.INVALID_SCOPE, GrantEvent.Kind.PRODUCT_FAILURE):
            # Cloudflare refused our request itself (scopes, client, parameters): the app's
            # registration and ours disagree. Staff hear about it once per app, not per click.
            with transaction.atomic():
                alert_open(
                    kind=Alert.Kind.CLIENT_CONFIG,
                    app=auth_request.app,
                    message=f"Cloudflare refused a consent request of OAuth app {auth_request.app.name} "
                    f"({error[:50]}): check its scopes and redirect URI against the registration",
                )
        _finish(
            auth_request,
            outcome=outcome,
            kind=kind,
            message=f"Cloudflare answered the consent with {error[:50]}",
            error_code=error[:100],
            error_description=description,
            detail={"error": error[:100], "with_code": one("code") is not None},
            actor_type=GrantEvent.Actor.CLIENT if result == Result.CANCELLED else GrantEvent.Actor.CLOUDFLARE,
        )
        return CallbackResult(result, auth_request, reason=error[:100])

    code = one("code")
    if not code:
        return _reject_consumed(
            auth_request, reason="missing_code", message="The callback carried neither a code nor an error"
        )

    return _complete(auth_request, code=code, callback_scope=one("scope"))


def _complete(auth_request: AuthorizationRequest, *, code: str, callback_scope: str | None) -> CallbackResult:
    """Exchange the code, read what the grant reaches, and store it. No transaction is open here."""
    app = auth_request.app
    try:
        tokens = cloudflare.exchange_code(
            app=app, code=code, code_verifier=auth_request.code_verifier, redirect_uri=auth_request.redirect_uri
        )
    except cloudflare.InvalidClient as exc:
        _finish(
            auth_request,
            outcome=AuthorizationRequest.Outcome.ERROR,
            kind=GrantEvent.Kind.PRODUCT_FAILURE,
            message="Cloudflare refused the OAuth app's credentials during the code exchange",
            error_code=exc.error,
            error_description=exc.description,
            detail={"stage": "token", "error": exc.error, "status": exc.status},
        )
        with transaction.atomic():
            alert_open(
                kind=Alert.Kind.CLIENT_CONFIG,
                app=app,
                message=f"Cloudflare refused the credentials of OAuth app {app.name} ({exc.error})",
            )
        return CallbackResult(Result.PRODUCT, auth_request, reason=exc.error)
    except cloudflare.OAuthError as exc:
        # invalid_grant on a fresh code means a code/verifier/redirect mismatch or a replay: ours.
        _finish(
            auth_request,
            outcome=AuthorizationRequest.Outcome.ERROR,
            kind=GrantEvent.Kind.PRODUCT_FAILURE,
            message="Cloudflare refused the authorization code",
            error_code=exc.error,
            error_description=exc.description,
            detail={"stage": "token", "error": exc.error, "status": exc.status},
        )
        return CallbackResult(Result.PRODUCT, auth_request, reason=exc.error)
    except cloudflare.TransientError as exc:
        _finish(
            auth_request,
            outcome=AuthorizationRequest.Outcome.ERROR,
            kind=GrantEvent.Kind.UPSTREAM_FAILURE,
            message="Cloudflare could not complete the code exchange",
            error_code=type(exc).__name__,
            detail={"stage": "token", "error": type(exc).__name__, "status": exc.status, "info": str(exc)[:200]},
        )
        return CallbackResult(Result.UPSTREAM, auth_request, reason=type(exc).__name__)

    # From here on Cloudflare holds a live authorization: any failure must revoke what we got, or
    # the contact would see an app in "Connected Applications" that we cannot use or disconnect.
    try:
        granted = _granted_scopes(tokens=tokens, callback_scope=callback_scope, auth_request=auth_request)
        try:
            reach = _read_reach(access_token=tokens.access_token, granted=granted)
        except _ScopeTooNarrow as exc:
            _revoke_quietly(app=app, tokens=tokens)
            _finish(
                auth_request,
                outcome=AuthorizationRequest.Outcome.DENIED,
                kind=GrantEvent.Kind.SCOPE_MISSING,
                message="Cloudflare granted too little to identify the connection",
                error_code="scope_missing",
                detail={"stage": exc.stage, "missing": missing_required(app=app, granted=granted)},
            )
            return CallbackResult(Result.SCOPE_MISSING, auth_request, reason="scope_missing")
        except cloudflare.CloudflareError as exc:
            _revoke_quietly(app=app, tokens=tokens)
            _finish(
                auth_request,
                outcome=AuthorizationRequest.Outcome.ERROR,
                kind=GrantEvent.Kind.UPSTREAM_FAILURE,
                message="Cloudflare did not answer while reading the connected accounts",
                error_code=type(exc).__name__,
                detail={"stage": "api", "error": type(exc).__name__, "status": exc.status, "info": str(exc)[:200]},
            )
            return CallbackResult(Result.UPSTREAM, auth_request, reason=type(exc).__name__)
        grant = _store_grant(auth_request=auth_request, tokens=tokens, granted=granted, reach=reach)
    except Exception as exc:  # noqa: BLE001 - a bug must not leave a live authorization behind
        logger.exception("Consent attempt %s failed after the code exchange", auth_request.pk)
        _revoke_quietly(app=app, tokens=tokens)
        _finish(
            auth_request,
            outcome=AuthorizationRequest.Outcome.ERROR,
            kind=GrantEvent.Kind.PRODUCT_FAILURE,
            message="The portal failed to store the connection",
            error_code=type(exc).__name__,
            detail={"stage": "store", "error": type(exc).__name__},
        )
        return CallbackResult(Result.PRODUCT, auth_request, reason=type(exc).__name__)

    if grant.missing_required_scopes:
        result = Result.SCOPE_MISSING
    elif not tokens.refresh_token:
        result = Result.NO_REFRESH
    elif grant.declined_scopes:
        result = Result.PARTIAL
    else:
        result = Result.CONNECTED
    return CallbackResult(result, auth_request, grant)


def missing_required(*, app: OAuthApp, granted: list[str]) -> list[str]:
    have = set(granted)
    return [s for s in app.required_scopes if s not in have]


def _granted_scopes(
    *, tokens: cloudflare.TokenResponse, callback_scope: str | None, auth_request: AuthorizationRequest
) -> list[str]:
    """The token response's `scope` is authoritative; then the callback's; then what was requested."""
    if tokens.scopes:
        return list(dict.fromkeys(tokens.scopes))
    if callback_scope and callback_scope.strip():
        return list(dict.fromkeys(callback_scope.split()))
    return list(auth_request.requested_scopes)


class _ScopeTooNarrow(Exception):
    def __init__(self, stage: str) -> None:
        super().__init__(stage)
        self.stage = stage


@dataclass
class _Reach:
    user: dict[str, Any]
    accounts: list[dict[str, Any]]
    zones_by_account: dict[str, list[dict[str, Any]]]


# The callback's reads run on a small pool shared by every request of this process. Each pool
# thread keeps its own keep-alive session (connections/cloudflare.py), so after the first callback
# the reads reuse warm TLS connections. The pool is larger than one callback's first round.
_READS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="consent-read")


def _read_reach(*, access_token: str, granted: list[str]) -> _Reach:
    """GET /user, /accounts and /zones (every page), concurrently. An auth error on a scope the
    grant does not have is the missing scope, not an outage.

    1. One round, all at once: /user, page 1 of /accounts and the first
       CLOUDFLARE_CALLBACK_ZONE_PAGES pages of /zones (every zone the grant reaches, 50 a page;
       each zone names its account). A grant with fewer zones gets empty pages back: a couple of
       cheap requests, against a round trip per page for a larger grant.
    2. Whatever page 1 says is left of either list, in a second round, all at once.
    3. Zones are grouped by their account, for the accounts /accounts returned (as before: a
       grant that cannot list accounts stores no zones).
    """
    have = set(granted)
    first_zone_pages = max(1, settings.CLOUDFLARE_CALLBACK_ZONE_PAGES)
    user_read = _READS.submit(cloudflare.get_user, access_token=access_token)
    account_pages = _pages_start("/accounts", access_token=access_token, count=1)
    zone_pages = _pages_start("/zones", access_token=access_token, count=first_zone_pages)
    try:
        user = user_read.result()
    except cloudflare.ApiError as exc:
        if exc.is_auth_error and "user-details.read" not in have:
            raise _ScopeTooNarrow("user") from exc
        raise
    if not isinstance(user, dict) or not user.get("id"):
        raise cloudflare.BadResponse("API GET /user: no user id")
    try:
        accounts = _pages_collect("/accounts", account_pages, access_token=access_token)
    except cloudflare.ApiError as exc:
        if not (exc.is_auth_error and "account-settings.read" not in have):
            raise
        accounts = []
    try:
        zones = _pages_collect("/zones", zone_pages, access_token=access_token)
    except cloudflare.ApiError as exc:
        if not (exc.is_auth_error and "zone.read" not in have):
            raise
        zones = []
    zones_by_account: dict[str, list[dict[str, Any]]] = {}
    for account in accounts:
        account_id = str(account.get("id") or "")
        if account_id:
            zones_by_account[account_id] = []
    for zone in zones:
        account_id = str((zone.get("account") or {}).get("id") or "") if isinstance(zone, dict) else ""
        if account_id in zones_by_account:
            zones_by_account[account_id].append(zone)
    return _Reach(user=user, accounts=accounts, zones_by_account=zones_by_account)


def _pages_start(path: str, *, access_token: str, count: int, first: int = 1) -> list[Future]:
    return [
        _READS.submit(cloudflare.api_list_page, path, access_token=access_token, page=page)
        for page in range(first, first + count)
    ]


def _pages_collect(path: str, started: list[Future], *, access_token: str) -> list[dict]:
    """Every item of a list whose first pages were started: page 1 tells how many there are; the
    missing ones are requested together; a started page beyond the last is ignored (even its error)."""
    items, total_pages = started[0].result()
    if not items:
        return []
    rest = _pages_start(
        path, access_token=access_token, count=max(0, total_pages - len(started)), first=len(started) + 1
    )
    for page in [*started[1:total_pages], *rest]:
        items.extend(page.result()[0])
    return items


def _revoke_quietly(*, app: OAuthApp, tokens: cloudflare.TokenResponse) -> None:
    """Best effort: undo an authorization we cannot keep. A failure is logged, never raised."""
    for token, hint in ((tokens.refresh_token, "refresh_token"), (tokens.access_token, "access_token")):
        if not token:
            continue
        try:
            cloudflare.revoke(app=app, token=token, token_type_hint=hint)
        except cloudflare.CloudflareError as exc:
            logger.warning("Could not revoke an unusable new authorization (%s): %s", hint, type(exc).__name__)


def next_refresh_at(*, now, expires_in: int):
    """The first refresh of a new grant, on the same schedule as every later one (refresh engine)."""
    from .refresh import refresh_due_at

    due = refresh_due_at(expires_at=now + timedelta(seconds=expires_in), lifetime=expires_in)
    return max(due, now + timedelta(seconds=min(MIN_REFRESH_DELAY, max(expires_in // 2, 1))))


def _upsert_reach(*, client: Client, reach: _Reach, now) -> list[CloudflareAccount]:
    """Create or update the accounts and zones this grant reaches (a few queries, any size).

    ignore_conflicts + re-read: two consents of the same client at once may insert the same
    account; the unique constraint decides and both continue with the same row.
    """
    names = {str(a["id"]): str(a.get("name") or a["id"])[:255] for a in reach.accounts if a.get("id")}
    CloudflareAccount.objects.bulk_create(
        [
            CloudflareAccount(client=client, cf_account_id=aid, name=name, first_seen_at=now, last_seen_at=now)
            for aid, name in names.items()
        ],
        ignore_conflicts=True,
    )
    accounts = list(CloudflareAccount.objects.filter(client=client, cf_account_id__in=list(names)))
    for account in accounts:
        account.name, account.last_seen_at, account.removed_at = names[account.cf_account_id], now, None
    CloudflareAccount.objects.bulk_update(accounts, ["name", "last_seen_at", "removed_at"])

    by_cf_id = {a.cf_account_id: a for a in accounts}
    seen: dict[tuple[int, str], dict[str, Any]] = {}
    for aid, zones in reach.zones_by_account.items():
        account = by_cf_id.get(aid)
        if account is None:
            continue
        for z in zones:
            if z.get("id"):
                seen[(account.pk, str(z["id"]))] = z
    # One upsert for every zone seen (INSERT ... ON CONFLICT DO UPDATE on both backends): a
    # bulk_update of 125 zones built a CASE per column and row, most of the callback's own time.
    rows = []
    for (acc_pk, zid), z in seen.items():
        plan = z.get("plan") if isinstance(z.get("plan"), dict) else {}
        rows.append(
            Zone(
                account_id=acc_pk,
                cf_zone_id=zid,
                name=str(z.get("name") or zid)[:255],
                status=str(z.get("status") or "")[:32],
                plan_name=str(plan.get("name") or "")[:100],
                first_seen_at=now,
                last_seen_at=now,
                removed_at=None,
            )
        )
    Zone.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["account", "cf_zone_id"],
        update_fields=["name", "status", "plan_name", "last_seen_at", "removed_at"],
        batch_size=500,
    )
    # A zone of a listed account that this read did not return is no longer there: marked, never
    # deleted. Every zone seen now has last_seen_at = now, so the rest are the older ones.
    listed_accounts = [by_cf_id[aid].pk for aid in reach.zones_by_account if aid in by_cf_id]
    Zone.objects.filter(account_id__in=listed_accounts, removed_at=None, last_seen_at__lt=now).update(removed_at=now)
    return accounts


def _store_grant(
    *, auth_request: AuthorizationRequest, tokens: cloudflare.TokenResponse, granted: list[str], reach: _Reach
) -> Grant:
    app, client, now = auth_request.app, auth_request.client, timezone.now()
    cf_user_id = str(reach.user["id"])[:64]
    cf_email = str(reach.user.get("email") or "")[:254]
    declined = [s for s in app.optional_scopes if s not in set(granted)]
    missing = missing_required(app=app, granted=granted)
    status = Grant.Status.NEEDS_RECONSENT if missing else Grant.Status.ACTIVE
    # No refresh token: the access token works until it expires, so the grant is active, but the
    # engine must never try to refresh it (next_refresh_at stays empty) and staff must know.
    last_error = (
        "Cloudflare returned no refresh token: this connection cannot renew itself and stops working "
        "when the access token expires. Ask the client to reconnect."
        if not tokens.refresh_token
        else ""
    )
    replace_q = Grant.objects.select_for_update().filter(
        client=client, app=app, cf_user_id=cf_user_id, status__in=LIVE_STATUSES
    )
    with transaction.atomic():
        old = replace_q.first()
        if old is not None:
            # Leave the live set first: the unique constraint allows one live grant per user.
            Grant.objects.filter(pk=old.pk, status__in=LIVE_STATUSES).update(
                status=Grant.Status.DISCONNECTING,
                end_reason=Grant.EndReason.REPLACED,
                status_changed_at=now,
                next_revoke_at=now,
                revoke_attempts=0,
                next_refresh_at=None,
                next_check_at=None,
            )
        grant = Grant(
            client=client,
            app=app,
            cf_user_id=cf_user_id,
            cf_user_email=cf_email,
            requested_scopes=list(auth_request.requested_scopes),
            granted_scopes=granted,
            declined_scopes=declined,
            access_expires_at=now + timedelta(seconds=tokens.expires_in),
            status=status,
            status_changed_at=now,
            authorized_at=now,
            authorized_by=auth_request.user,
            last_refreshed_at=None,
            next_refresh_at=next_refresh_at(now=now, expires_in=tokens.expires_in) if tokens.refresh_token else None,
            next_check_at=now + timedelta(seconds=settings.GRANT_CHECK_INTERVAL),
            last_error=last_error,
        )
        grant.set_tokens(access_token=tokens.access_token, refresh_token=tokens.refresh_token)
        # A concurrent consent of the same Cloudflare user can win the live slot between our
        # SELECT and this INSERT: the unique constraint then raises, and the caller reports a
        # product failure and revokes these tokens (the other consent stands).
        grant.save()
        accounts = _upsert_reach(client=client, reach=reach, now=now)
        grant.accounts.set(accounts)

        previous = old or auth_request.replaces_grant
        if auth_request.purpose == AuthorizationRequest.Purpose.ADD_SCOPES and previous is not None:
            kind = GrantEvent.Kind.SCOPES_ADDED
        elif previous is not None:
            kind = GrantEvent.Kind.RECONNECTED
        else:
            kind = GrantEvent.Kind.CONNECTED
        summary = {
            "cf_user_email": cf_email,
            "accounts": [{"id": a.cf_account_id, "name": a.name} for a in accounts],
            "zones": sum(len(z) for z in reach.zones_by_account.values()),
            "granted_scopes": granted,
            "declined_scopes": declined,
            "purpose": auth_request.purpose,
        }
        if previous is not None:
            summary["replaces"] = str(previous.code)
            Grant.objects.filter(pk=previous.pk).update(replaced_by=grant)
        event_record(
            client=client,
            grant=grant,
            kind=kind,
            actor_type=GrantEvent.Actor.CLIENT,
            actor=auth_request.user,
            message=f"Authorized by {cf_email or cf_user_id} for {len(accounts)} account(s)",
            detail=summary,
            authorization_request=auth_request,
        )
        if declined:
            event_record(
                client=client,
                grant=grant,
                kind=GrantEvent.Kind.SCOPE_DECLINED,
                actor_type=GrantEvent.Actor.CLIENT,
                actor=auth_request.user,
                message="Optional permissions declined: " + ", ".join(declined),
                detail={"declined_scopes": declined},
                authorization_request=auth_request,
            )
        if missing or not tokens.refresh_token:
            what = missing if missing else [OFFLINE_ACCESS]
            event_record(
                client=client,
                grant=grant,
                kind=GrantEvent.Kind.SCOPE_MISSING,
                message=("Required permissions missing: " + ", ".join(missing))
                if missing
                else "No refresh token: the connection cannot renew itself",
                detail={"missing_scopes": what, "reason": "required_scope" if missing else "no_refresh_token"},
                authorization_request=auth_request,
            )
            alert_open(
                kind=Alert.Kind.SCOPE_MISSING,
                grant=grant,
                message=(
                    f"{client.name}: the new connection lacks required permissions ({', '.join(missing)})"
                    if missing
                    else f"{client.name}: the new connection has no refresh token and will stop working"
                ),
            )
        if old is not None:
            event_record(
                client=client,
                grant=old,
                kind=GrantEvent.Kind.DISCONNECT_REQUESTED,
                actor_type=GrantEvent.Actor.SYSTEM,
                message="Replaced by a newer consent of the same Cloudflare user; revoking at Cloudflare",
                detail={"reason": "replaced", "replaced_by": str(grant.code)},
                authorization_request=auth_request,
            )
            old_id = old.pk
            transaction.on_commit(lambda: _enqueue_revoke(old_id))
        AuthorizationRequest.objects.filter(pk=auth_request.pk).update(
            outcome=AuthorizationRequest.Outcome.GRANTED, grant=grant
        )
        auth_request.outcome, auth_request.grant = AuthorizationRequest.Outcome.GRANTED, grant
    return grant


def _enqueue_revoke(grant_id: int) -> None:
    from ..tasks import revoke_grant_task

    try:
        revoke_grant_task.delay(grant_id)
    except Exception:  # noqa: BLE001 - a broker outage only delays it: the revoke sweep finds the row
        logger.warning("Could not enqueue revocation of grant %s; the sweep will", grant_id)


def authorization_requests_expire(*, now=None) -> int:
    """Close consent attempts nobody came back from (index connections_authreq_pending).

    No event per attempt: an abandoned consent screen is not an incident. The callback of a late
    contact then finds the attempt finished and says "expired".
    """
    now = now or timezone.now()
    return AuthorizationRequest.objects.filter(
        outcome=AuthorizationRequest.Outcome.PENDING, consumed_at__isnull=True, expires_at__lte=now
    ).update(outcome=AuthorizationRequest.Outcome.EXPIRED, consumed_at=now, error_code="expired")
