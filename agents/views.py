"""The portal as the agents' OAuth 2.1 authorization server, on django-oauth-toolkit.

Why django-oauth-toolkit: it is the maintained OAuth 2 server for Django, and it already does
what the MCP authorization revision asks of an authorization server: authorization code with PKCE
(S256 only when its RFC 9700 gates are on), rotating single-use refresh tokens with reuse
detection (a reused token revokes its family), resource indicators stored on the code and token
(RFC 8707), `iss` in the authorization response (RFC 9207), RFC 8414 metadata, Client ID Metadata
Documents and RFC 7591 registration, and tokens kept as hashes. No OAuth is written here; these
views extend it where the portal needs more:

- the consent page (`AgentAuthorizationView`): staff only, signed in with MFA as for the admin;
  the `resource` must be this MCP server; the staff member picks tools and clients, and the
  approval is an `AgentConnection`;
- the token endpoint (`AgentTokenView`): the `resource` must be this MCP server; a reused refresh
  token revokes the whole agent connection (every token of that agent for that staff member);
- registration (`AgentRegistrationView`): public clients only (`token_endpoint_auth_method` none),
  authorization code only, https or loopback redirect URIs.
"""

from __future__ import annotations

import hashlib
import json

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider.forms import AllowForm
from oauth2_provider.models import get_refresh_token_model
from oauth2_provider.views import AuthorizationView, DynamicClientRegistrationView, TokenView

from agencyportal import roles
from clients.models import Client

from .metadata import redirect_uri_ok
from .models import AgentConnection
from .tools import ALL_TOOLS, tool_infos


def _staff_clients(user):
    qs = Client.objects.order_by("name")
    if roles.user_sees_all_clients(user):
        return qs
    return qs.filter(account_manager=user)


class ConsentForm(AllowForm):
    tools = forms.MultipleChoiceField(
        choices=[(name, name) for name in ALL_TOOLS], required=False, widget=forms.CheckboxSelectMultiple
    )
    clients = forms.ModelMultipleChoiceField(
        queryset=Client.objects.none(), required=False, widget=forms.CheckboxSelectMultiple
    )

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["clients"].queryset = _staff_clients(user)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("allow"):
            if not cleaned.get("tools"):
                raise forms.ValidationError("Pick at least one tool, or deny.")
            if not cleaned.get("clients"):
                raise forms.ValidationError("Pick at least one client, or deny.")
        return cleaned


def _refuse(request: HttpRequest, message: str, status: int = 400) -> HttpResponse:
    return render(request, "agents/refused.html", {"message": message}, status=status)


class AgentAuthorizationView(AuthorizationView):
    template_name = "agents/consent.html"
    form_class = ConsentForm

    def dispatch(self, request, *args, **kwargs):
        # Staff with a verified MFA session only: the admin's own requirement.
        if not admin.site.has_permission(request):
            return redirect_to_login(request.get_full_path(), reverse("admin:login"))
        return super().dispatch(request, *args, **kwargs)

    def get(self, request, *args, **kwargs):
        resources = request.GET.getlist("resource")
        if resources != [settings.MCP_URL]:
            return _refuse(
                request,
                f"This agent asked for access to {', '.join(resources) or 'an unnamed resource'}; "
                f"the portal only grants access to its MCP server ({settings.MCP_URL}).",
            )
        if request.GET.get("code_challenge_method") != "S256" or not request.GET.get("code_challenge"):
            return _refuse(request, "This agent did not use PKCE with S256: it cannot be connected.")
        if request.GET.get("approval_prompt", "force") != "force":
            return _refuse(request, "Every agent connection is approved on this page.")
        if request.GET.get("response_type") != "code":
            return _refuse(request, "Only the authorization code flow is supported.")
        return super().get(request, *args, **kwargs)

    def get_form_kwargs(self):
        kwargs = super().get_form_kwargs()
        kwargs["user"] = self.request.user
        return kwargs

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        application = kwargs.get("application")
        form = context.get("form")
        if application is None and form is not None:
            client_id = form.data.get("client_id") or form.initial.get("client_id")
            application = self._application(client_id)
        groups = {"read": [], "write": [], "destructive": []}
        for info in tool_infos():
            groups[str(info.kind)].append(info)
        context.update(
            application=application,
            tool_groups=[
                ("read", "Read: see, change nothing", groups["read"]),
                ("write", "Write: change things in client accounts", groups["write"]),
                ("destructive", "Destructive: remove things", groups["destructive"]),
            ],
            staff_clients=_staff_clients(self.request.user),
            is_metadata_document=bool(application and application.client_id.startswith("https://")),
            mcp_url=settings.MCP_URL,
        )
        return context

    @staticmethod
    def _application(client_id):
        from oauth2_provider.models import get_application_model

        return get_application_model().objects.filter(client_id=client_id).first() if client_id else None

    def form_valid(self, form):
        if form.cleaned_data.get("allow"):
            if (form.cleaned_data.get("resource") or "").split() != [settings.MCP_URL]:
                return _refuse(self.request, f"The portal only grants access to its MCP server ({settings.MCP_URL}).")
            application = self._application(form.cleaned_data["client_id"])
            if application is None or not redirect_uri_ok(form.cleaned_data["redirect_uri"]):
                return _refuse(self.request, "This agent's redirect address is not https or a local address.")
        response = super().form_valid(form)
        if form.cleaned_data.get("allow") and response.status_code in (301, 302) and "code=" in response["Location"]:
            self._approve(application, form)
        return response

    def _approve(self, application, form) -> None:
        user = self.request.user
        with transaction.atomic():
            for old in AgentConnection.objects.active().filter(application=application, user=user):
                AgentConnection.objects.filter(pk=old.pk).update(
                    revoked_at=timezone.now(), revoke_reason=AgentConnection.RevokeReason.REPLACED
                )
            conn = AgentConnection.objects.create(
                user=user,
                application=application,
                name=application.name or application.client_id,
                client_id_url=application.client_id,
                redirect_uri=form.cleaned_data["redirect_uri"],
                tools=[t for t in ALL_TOOLS if t in form.cleaned_data["tools"]],
            )
            conn.clients.set(form.cleaned_data["clients"])


def _oauth_error(error: str, description: str, status: int = 400) -> JsonResponse:
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    response["Cache-Control"] = "no-store"
    return response


@method_decorator(csrf_exempt, name="dispatch")
class AgentTokenView(TokenView):
    def post(self, request, *args, **kwargs):
        grant_type = request.POST.get("grant_type")
        if grant_type not in ("authorization_code", "refresh_token"):
            return _oauth_error("unsupported_grant_type", "Only authorization_code and refresh_token are supported.")
        if request.POST.getlist("resource") != [settings.MCP_URL]:
            return _oauth_error("invalid_target", f"The resource must be this portal's MCP server: {settings.MCP_URL}")
        reused = self._reused_refresh_token(request) if grant_type == "refresh_token" else None
        response = super().post(request, *args, **kwargs)
        if reused is not None:
            for conn in AgentConnection.objects.active().filter(
                application_id=reused.application_id, user_id=reused.user_id
            ):
                conn.revoke(reason=AgentConnection.RevokeReason.REFRESH_REUSE)
        return response

    @staticmethod
    def _reused_refresh_token(request):
        """A refresh token already used (revoked): someone replays it, so the connection is over."""
        token = request.POST.get("refresh_token") or ""
        checksum = hashlib.sha256(token.encode("utf-8")).hexdigest()
        return (
            get_refresh_token_model()
            .objects.filter(token_checksum=checksum, revoked__isnull=False)
            .only("id", "application_id", "user_id")
            .first()
        )


@method_decorator(csrf_exempt, name="dispatch")
class AgentRegistrationView(DynamicClientRegistrationView):
    """RFC 7591 for agents that do not publish a metadata document: public clients only."""

    def post(self, request, *args, **kwargs):
        if len(request.body) > 16 * 1024:
            return _oauth_error("invalid_client_metadata", "The registration request is too large.")
        try:
            data = json.loads(request.body or b"{}")
        except ValueError:
            return _oauth_error("invalid_client_metadata", "The registration request is not JSON.")
        if not isinstance(data, dict):
            return _oauth_error("invalid_client_metadata", "The registration request must be a JSON object.")
        if data.get("token_endpoint_auth_method", "none") != "none":
            return _oauth_error("invalid_client_metadata", "Agents register as public clients: use 'none'.")
        if set(data.get("grant_types") or ["authorization_code"]) - {"authorization_code", "refresh_token"}:
            return _oauth_error("invalid_client_metadata", "Only authorization_code (and refresh_token).")
        if set(data.get("response_types") or ["code"]) != {"code"}:
            return _oauth_error("invalid_client_metadata", "Only the code response type.")
        uris = data.get("redirect_uris")
        if not isinstance(uris, list) or not uris or not all(isinstance(u, str) and redirect_uri_ok(u) for u in uris):
            return _oauth_error("invalid_redirect_uri", "Redirect URIs must be https, or http on a loopback address.")
        data["token_endpoint_auth_method"] = "none"
        data["grant_types"] = ["authorization_code", "refresh_token"]
        request._body = json.dumps(data).encode()
        return super().post(request, *args, **kwargs)
