"""The client's migration page on the portal: what the agency uses today, and the switch."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from agencyportal.http import no_referrer, private_page
from clients.decorators import portal_member_required
from connections.forms import ConfirmForm
from connections.scopes import scope_lines
from connections.services import consent
from connections.views import _see_other, _with_authorize_origin_in_form_action
from operations.catalogue import actions_for_scopes

from . import services
from .mapping import scopes_of
from .models import ApiToken


def _token_for_member(request: HttpRequest, code) -> ApiToken:
    token = (
        ApiToken.objects.filter(code=code, client_id=request.member.client_id, purpose=ApiToken.Purpose.CUSTOMER)
        .exclude(state=ApiToken.State.TOKEN_ONLY)
        .defer("token")
        .first()
    )
    if token is None:
        raise Http404
    return token


@require_http_methods(["GET", "POST"])
@portal_member_required
@private_page
def migration(request: HttpRequest, code) -> HttpResponse:
    token = _token_for_member(request, code)
    member = request.member
    app = consent.oauth_app_default()
    gaps = None
    if token.state in (ApiToken.State.INVITED, ApiToken.State.CONNECTED):
        token, gaps = services.parity_check_gaps(token=token)
    scopes = services.requested_scopes(token=token, app=app)
    can_connect = member.can_manage_connections and app is not None and token.state == ApiToken.State.INVITED
    form = ConfirmForm(request.POST if request.method == "POST" else None)
    if request.method == "POST":
        if not can_connect or not form.is_valid():
            return redirect("apitokens:migration", code=token.code)
        try:
            start = consent.authorization_request_start(
                app=app, client=member.client, user=request.user, session=request.session, scopes=scopes
            )
        except consent.TooManyAttempts as exc:
            messages.warning(request, exc.message)
            return redirect("apitokens:migration", code=token.code)
        return no_referrer(_see_other(start.url))
    # What the connection lacks, worded in the reader's language (the stored lines are English).
    parity_lines = []
    if token.state == ApiToken.State.CONNECTED and token.parity_diff:
        parity_lines = gaps.lines() if gaps is not None else list(token.parity_diff)
    today, _ = actions_for_scopes(scopes_of(token.permission_groups))
    lines = scope_lines(scopes, required=app.required_scopes if app else [])
    response = render(
        request,
        "apitokens/migration.html",
        {
            "client": member.client,
            "token": token,
            "app": app,
            "today": today,
            "required": [line for line in lines if line.required],
            "optional": [line for line in lines if not line.required],
            "can_connect": can_connect,
            "parity_lines": parity_lines,
            "form": form,
        },
    )
    return _with_authorize_origin_in_form_action(response)
