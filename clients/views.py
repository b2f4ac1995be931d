"""The client portal: sign in, see what the agency can do, connect and disconnect.

Every page past the login requires a `ClientMember` (staff without one get a clear 403), and every
object comes through the scoping helpers in `clients/selectors.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth.views import LoginView, LogoutView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_http_methods

from agencyportal.http import no_referrer, private_page
from connections.models import LIVE_STATUSES, AuthorizationRequest, Grant
from connections.scopes import ScopeLine, scope_lines
from connections.services.consent import SESSION_RESULT_KEY, Result, missing_scopes, oauth_app_default

from . import selectors, services
from .decorators import portal_member_required
from .forms import ContactSettingsForm, InvitePasswordForm, PortalLoginForm
from .middleware import language_for

INVITE_SESSION_KEY = "portal_invite_token"

# How a grant's status reads to a client contact.
STATUS_TEXT = {
    Grant.Status.ACTIVE: (gettext_lazy("Connected"), "ok"),
    Grant.Status.REFRESH_FAILING: (gettext_lazy("Having trouble reaching Cloudflare (retrying automatically)"), "warn"),
    Grant.Status.NEEDS_RECONSENT: (gettext_lazy("Needs your attention: please reconnect"), "bad"),
    Grant.Status.DISCONNECTING: (gettext_lazy("Disconnecting… revocation pending at Cloudflare"), "warn"),
    Grant.Status.DISCONNECTED: (gettext_lazy("Disconnected"), "off"),
    Grant.Status.REVOKED: (gettext_lazy("Revoked in Cloudflare"), "off"),
    Grant.Status.LOST: (gettext_lazy("Stopped working: please reconnect"), "bad"),
}
HEALTH_TEXT = {
    Grant.Health.UNKNOWN: gettext_lazy("Not checked yet"),
    Grant.Health.HEALTHY: gettext_lazy("Working normally"),
    Grant.Health.DEGRADED: gettext_lazy("Partly working"),
    Grant.Health.FAILING: gettext_lazy("Not working"),
}
# What ended a grant, in the client's words (the card of an ended grant shows this instead of health).
END_TEXT = {
    Grant.EndReason.USER_REVOKED: gettext_lazy("The agency's access was removed in Cloudflare's dashboard"),
    Grant.EndReason.APP_DELETED: gettext_lazy("The agency's Cloudflare app was removed or disabled at Cloudflare"),
    Grant.EndReason.DISCONNECTED_BY_CLIENT: gettext_lazy("You disconnected it here"),
    Grant.EndReason.DISCONNECTED_BY_STAFF: gettext_lazy("The agency disconnected it"),
    Grant.EndReason.REPLACED: gettext_lazy("A newer connection replaced it"),
    Grant.EndReason.REFRESH_TOKEN_LOST: gettext_lazy("It stopped working and needs to be connected again"),
    Grant.EndReason.NO_REFRESH_TOKEN: gettext_lazy(
        "Cloudflare did not let it renew itself (offline access was not granted)"
    ),
}
END_TEXT_BY_STATUS = {
    Grant.Status.DISCONNECTING: gettext_lazy("You disconnected it here"),
    Grant.Status.DISCONNECTED: gettext_lazy("It was disconnected"),
    Grant.Status.REVOKED: gettext_lazy("The agency's access was removed at Cloudflare"),
    Grant.Status.LOST: gettext_lazy("It stopped working and needs to be connected again"),
}


class PortalLoginView(LoginView):
    template_name = "clients/login.html"
    authentication_form = PortalLoginForm
    redirect_authenticated_user = False  # a signed-in staff user must still see the form

    def dispatch(self, request, *args, **kwargs):
        response = super().dispatch(request, *args, **kwargs)
        response["Cache-Control"] = "no-store"
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response


class PortalLogoutView(LogoutView):
    """POST only (Django's LogoutView): a link cannot sign anyone out."""

    next_page = "clients:login"


@dataclass
class GrantCard:
    """Everything the portal shows about one grant, computed from prefetched rows (no queries)."""

    grant: Grant
    status_text: str
    status_tone: str
    health_text: str
    granted: list[ScopeLine]
    declined: list[ScopeLine]
    missing_required: list[ScopeLine]
    accounts: list
    zone_count: int
    can_disconnect: bool
    can_add_scopes: bool
    can_reconnect: bool
    # An ended grant (disconnecting, disconnected, revoked, lost) has no health and no current reach:
    # the card says what ended it and when instead.
    ended: bool = False
    end_text: str = ""
    ended_on: datetime | None = None


def grant_card(grant: Grant, *, can_manage: bool) -> GrantCard:
    app = grant.app
    text, tone = STATUS_TEXT.get(grant.status, (grant.get_status_display(), "off"))
    accounts = list(grant.accounts.all())
    live = grant.status in LIVE_STATUSES
    ended = not live
    return GrantCard(
        grant=grant,
        status_text=text,
        status_tone=tone,
        health_text=HEALTH_TEXT.get(grant.health, grant.get_health_display()),
        granted=scope_lines(grant.granted_scopes, required=app.required_scopes),
        declined=scope_lines(grant.declined_scopes, required=()),
        missing_required=scope_lines(grant.missing_required_scopes, required=app.required_scopes),
        accounts=accounts,
        zone_count=sum(len(a.zones.all()) for a in accounts),
        can_disconnect=can_manage and live,
        can_add_scopes=can_manage and live and bool(missing_scopes(grant=grant)),
        # Reconnect: to fix a broken grant, or to change the accounts or permissions of a live one.
        # After a disconnect the contact starts again with Connect.
        can_reconnect=can_manage and grant.status not in (Grant.Status.DISCONNECTING, Grant.Status.DISCONNECTED),
        ended=ended,
        end_text=(END_TEXT.get(grant.end_reason) or END_TEXT_BY_STATUS.get(grant.status, "")) if ended else "",
        ended_on=(grant.ended_at or grant.status_changed_at) if ended else None,
    )


@require_GET
@portal_member_required
@private_page
def home(request: HttpRequest) -> HttpResponse:
    member = request.member
    can_manage = member.can_manage_connections
    cards = [grant_card(g, can_manage=can_manage) for g in selectors.portal_grants(client_id=member.client_id)]
    current = [c for c in cards if c.grant.status in selectors.CURRENT_STATUSES]
    history = [c for c in cards if c.grant.status not in selectors.CURRENT_STATUSES]
    outcome = _pop_outcome(request, client_id=member.client_id)
    return render(
        request,
        "clients/home.html",
        {
            "member": member,
            "client": member.client,
            "current": current,
            "history": history,
            # With no current connection, the newest ended one says what happened (not "never connected").
            "last_ended": history[0] if history and not current else None,
            "can_manage": can_manage,
            "app_available": oauth_app_default() is not None,
            "outcome": outcome,
        },
    )


def _pop_outcome(request: HttpRequest, *, client_id: int) -> dict | None:
    """The result of the last consent attempt, shown once (stored by the callback)."""
    stored = request.session.pop(SESSION_RESULT_KEY, None)
    if not isinstance(stored, dict) or stored.get("result") not in vars(Result).values():
        return None
    auth_request: AuthorizationRequest | None = None
    if stored.get("request_id"):
        auth_request = selectors.authorization_request_for_client(client_id=client_id, pk=stored["request_id"])
    grant = auth_request.grant if auth_request is not None else None
    return {
        "result": stored["result"],
        "authorization_request": auth_request,
        "grant": grant,
        "already_granted": auth_request is not None and auth_request.outcome == AuthorizationRequest.Outcome.GRANTED,
        "error_description": (auth_request.error_description[:200] if auth_request is not None else ""),
    }


@require_GET
@portal_member_required
@private_page
def help_page(request: HttpRequest) -> HttpResponse:
    app = oauth_app_default()
    lines = scope_lines(app.all_scopes, required=app.required_scopes) if app is not None else []
    context = {"member": request.member, "client": request.member.client, "app": app, "app_lines": lines}
    return render(request, "clients/help.html", context)


@require_GET
@private_page
def set_password(request: HttpRequest, token: str) -> HttpResponse:
    """The invitation link. Like Django's password reset, the token moves into the session and the
    browser is sent to a URL without it, so it cannot leak through Referer or history."""
    user = services.invite_token_check(token=token)
    if user is None:
        return render(request, "clients/invite_invalid.html", status=400)
    request.session[INVITE_SESSION_KEY] = token
    return no_referrer(redirect("clients:set_password_form"))


@require_http_methods(["GET", "POST"])
@private_page
def set_password_form(request: HttpRequest) -> HttpResponse:
    token = request.session.get(INVITE_SESSION_KEY) or ""
    user = services.invite_token_check(token=token) if token else None
    if user is None:
        return render(request, "clients/invite_invalid.html", status=400)
    form = InvitePasswordForm(user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        services.member_accept_invite(user=user, password=form.cleaned_data["new_password1"])
        request.session.pop(INVITE_SESSION_KEY, None)
        # login() cycles the session key (no fixation) and keeps nothing of the invitation.
        auth_login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, _("Your password is set. Welcome!"))
        return redirect("clients:home")
    return render(request, "clients/set_password.html", {"form": form, "invited_user": user})


@require_http_methods(["GET", "POST"])
@portal_member_required
@private_page
def settings_page(request: HttpRequest) -> HttpResponse:
    """The contact's language and time zone; a saved language applies from this very response on."""
    member = request.member
    form = ContactSettingsForm(request.POST or None, instance=member)
    if request.method == "POST" and form.is_valid():
        member = form.save()
        translation.activate(language_for(request, member))
        request.LANGUAGE_CODE = translation.get_language()
        messages.success(request, _("Your settings are saved."))
        return redirect("clients:settings")
    return render(request, "clients/settings.html", {"member": member, "client": member.client, "form": form})
