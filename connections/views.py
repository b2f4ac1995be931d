"""Consent and disconnect pages of the client portal, and the OAuth callback."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.csp import CSP
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from agencyportal.http import no_referrer, private_page
from clients import selectors
from clients.decorators import portal_member_required

from .forms import ConfirmForm
from .models import LIVE_STATUSES, AuthorizationRequest, Grant, GrantEvent
from .scopes import scope_lines
from .services import consent, disconnect

logger = logging.getLogger(__name__)


def _with_authorize_origin_in_form_action(response: HttpResponse) -> HttpResponse:
    """The pre-consent form posts here and is answered with a redirect to Cloudflare; browsers apply
    `form-action` to that redirect too, so this one page allows Cloudflare's origin as a target."""
    parts = urlsplit(settings.CLOUDFLARE_AUTHORIZE_URL)
    origin = f"{parts.scheme}://{parts.netloc}"
    config = dict(settings.SECURE_CSP or {})
    config["form-action"] = [CSP.SELF, origin]
    response._csp_config = config
    return response


def _consent_page(request: HttpRequest, *, purpose: str, grant: Grant | None) -> HttpResponse:
    member = request.member
    if not member.can_manage_connections:
        return render(request, "connections/not_allowed.html", {"client": member.client}, status=403)
    app = grant.app if grant is not None else consent.oauth_app_default()
    if app is None or not app.is_active:
        return render(request, "connections/unavailable.html", {"client": member.client}, status=503)
    if purpose == AuthorizationRequest.Purpose.ADD_SCOPES and not consent.missing_scopes(grant=grant):
        messages.info(request, _("This connection already has every permission the agency asks for."))
        return redirect("clients:home")
    scopes = consent.requested_scopes_for(app=app, purpose=purpose, grant=grant)
    form = ConfirmForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            start = consent.authorization_request_start(
                app=app,
                client=member.client,
                user=request.user,
                session=request.session,
                purpose=purpose,
                replaces_grant=grant,
            )
        except consent.TooManyAttempts as exc:
            messages.warning(request, exc.message)
            return redirect("clients:home")
        # The Cloudflare URL carries the state: no Referer from here on.
        return no_referrer(_see_other(start.url))
    lines = scope_lines(scopes, required=app.required_scopes)
    new_lines = (
        scope_lines(consent.missing_scopes(grant=grant), required=app.required_scopes)
        if purpose == AuthorizationRequest.Purpose.ADD_SCOPES
        else []
    )
    response = render(
        request,
        "connections/consent.html",
        {
            "client": member.client,
            "app": app,
            "purpose": purpose,
            "grant": grant,
            "required": [line for line in lines if line.required],
            "optional": [line for line in lines if not line.required],
            "new_lines": new_lines,
            "incremental": set(scopes) != set(app.all_scopes),
            "ttl_minutes": settings.AUTHORIZATION_REQUEST_TTL // 60,
            "form": form,
        },
    )
    return _with_authorize_origin_in_form_action(response)


def _see_other(url: str) -> HttpResponse:
    response = HttpResponse(status=303)
    response["Location"] = url
    return response


@require_http_methods(["GET", "POST"])
@portal_member_required
@private_page
def connect(request: HttpRequest) -> HttpResponse:
    return _consent_page(request, purpose=AuthorizationRequest.Purpose.CONNECT, grant=None)


@require_http_methods(["GET", "POST"])
@portal_member_required
@private_page
def reconnect(request: HttpRequest, code) -> HttpResponse:
    grant = selectors.grant_get_for_member(user=request.user, code=code)
    return _consent_page(request, purpose=AuthorizationRequest.Purpose.RECONNECT, grant=grant)


@require_http_methods(["GET", "POST"])
@portal_member_required
@private_page
def add_scopes(request: HttpRequest, code) -> HttpResponse:
    grant = selectors.grant_get_for_member(user=request.user, code=code)
    if grant.status not in LIVE_STATUSES:
        return redirect("connections:reconnect", code=grant.code)
    return _consent_page(request, purpose=AuthorizationRequest.Purpose.ADD_SCOPES, grant=grant)


# The callback is a top-level GET from Cloudflare. It changes state only through the single-use
# `state`, so it needs no CSRF token; csrf_exempt lets a POST reach require_GET and get a 405
# rather than a CSRF failure page.
@csrf_exempt
@require_GET
@private_page
def callback(request: HttpRequest) -> HttpResponse:
    result = consent.callback_handle(
        raw_query=request.META.get("QUERY_STRING", ""),
        params={k: request.GET.getlist(k) for k in request.GET},
        session=request.session,
        user=request.user,
    )
    auth_request = result.authorization_request
    request.session[consent.SESSION_RESULT_KEY] = {
        "result": result.result,
        # Only an attempt this session started is shown back (never one found by a foreign state).
        "request_id": auth_request.pk if auth_request is not None and result.reason != "other_session" else None,
    }
    is_member = selectors.member_for_request(request) is not None
    # 303 to a clean URL: the code and state never stay in the address bar or the history, and
    # no-referrer so the callback URL is not sent on as a Referer either.
    return no_referrer(_see_other(reverse("clients:home" if is_member else "connections:result")))


@require_GET
@private_page
def result(request: HttpRequest) -> HttpResponse:
    """Where a callback that cannot be tied to a signed-in contact ends up."""
    stored = request.session.pop(consent.SESSION_RESULT_KEY, None)
    outcome = {"result": stored.get("result")} if isinstance(stored, dict) else None
    return render(request, "connections/result.html", {"outcome": outcome}, status=200 if outcome else 404)


@require_http_methods(["GET", "POST"])
@portal_member_required
@private_page
def disconnect_view(request: HttpRequest, code) -> HttpResponse:
    grant = selectors.grant_get_for_member(user=request.user, code=code)
    member = request.member
    if not member.can_manage_connections:
        return render(request, "connections/not_allowed.html", {"client": member.client}, status=403)
    if grant.status not in LIVE_STATUSES:
        messages.info(request, _("This connection is already disconnected."))
        return redirect("clients:home")
    form = ConfirmForm(request.POST if request.method == "POST" else None)
    if request.method == "POST":
        if not form.is_valid():
            return HttpResponseForbidden()
        try:
            disconnect.grant_disconnect(grant=grant, actor=request.user, actor_type=GrantEvent.Actor.CLIENT)
        except disconnect.NotDisconnectable:
            messages.info(request, _("This connection is already disconnected."))
        else:
            messages.success(
                request,
                _("Disconnected. The agency can no longer use this connection; we are asking Cloudflare to revoke it."),
            )
        return redirect("clients:home")
    accounts = list(grant.accounts.all())
    return render(
        request,
        "connections/disconnect_confirm.html",
        {"grant": grant, "client": member.client, "accounts": accounts, "form": form},
    )
