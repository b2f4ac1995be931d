"""Agent connections in the admin: who approved which agent, for what, how much it is used; revoke."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from oauth2_provider.models import get_access_token_model, get_grant_model, get_id_token_model, get_refresh_token_model

from agencyportal.roles import staff_sees_all_clients
from clients.models import Client

from .models import AgentConnection
from .tools import tool_label

# Tokens are kept as hashes and mean nothing to read; agents are managed as connections below.
for _model in (get_access_token_model(), get_refresh_token_model(), get_grant_model(), get_id_token_model()):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)


@admin.register(AgentConnection)
class AgentConnectionAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "user",
        "approved_at",
        "tools_shown",
        "clients_shown",
        "last_used_at",
        "calls",
        "status",
        "revoke_button",
    )
    list_filter = ("revoked_at", "approved_at")
    search_fields = ("name", "client_id_url", "user__username")
    list_select_related = ("user", "application")
    readonly_fields = (
        "name",
        "user",
        "application",
        "client_id_url",
        "redirect_uri",
        "tools_shown",
        "clients_shown",
        "approved_at",
        "last_used_at",
        "calls",
        "revoked_at",
        "revoked_by",
        "revoke_reason",
    )
    fields = readonly_fields
    actions = ["revoke_selected"]

    def get_queryset(self, request: HttpRequest):
        queryset = (
            super()
            .get_queryset(request)
            .prefetch_related(Prefetch("clients", queryset=Client.objects.only("id", "name").order_by("name")))
        )
        if staff_sees_all_clients(request):
            return queryset
        return queryset.filter(user=request.user)

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # connections are made by approving an agent, never by hand

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def _revokes_nothing(self, request) -> bool:
        # Support sees every connection and revokes none; account managers revoke their own.
        user = request.user
        return staff_sees_all_clients(request) and not (
            user.is_superuser or user.has_perm("agents.change_agentconnection")
        )

    def get_list_display(self, request):
        display = super().get_list_display(request)
        return [d for d in display if d != "revoke_button"] if self._revokes_nothing(request) else display

    def has_revoke_permission(self, request) -> bool:
        return not self._revokes_nothing(request)

    def _may_revoke(self, request, obj=None) -> bool:
        user = request.user
        if user.is_superuser:
            return True
        if obj is not None and obj.user_id == user.pk:
            return True
        return user.has_perm("agents.change_agentconnection")

    @admin.display(description="Tools")
    def tools_shown(self, obj: AgentConnection) -> str:
        return format_html_join(", ", "<span title='{}'>{}</span>", ((tool_label(t), t) for t in obj.tools)) or "—"

    @admin.display(description="Clients")
    def clients_shown(self, obj: AgentConnection) -> str:
        return ", ".join(c.name for c in obj.clients.all()) or "—"

    @admin.display(description="Status")
    def status(self, obj: AgentConnection) -> str:
        if obj.revoked_at is None:
            return "Active"
        return f"Revoked {obj.revoked_at:%Y-%m-%d %H:%M} ({obj.get_revoke_reason_display()})"

    @admin.display(description="")
    def revoke_button(self, obj: AgentConnection) -> str:
        if obj.revoked_at is not None:
            return ""
        # Submits the changelist's own form (it carries the CSRF token) to the revoke URL.
        return format_html(
            '<button type="submit" class="button revoke-agent" formaction="{}" formmethod="post" '
            'name="revoke" value="{}">Revoke</button>',
            reverse("admin:agents_agentconnection_revoke", args=[obj.pk]),
            obj.pk,
        )

    def get_urls(self):
        return [
            path(
                "<int:pk>/revoke/",
                self.admin_site.admin_view(self.revoke_view),
                name="agents_agentconnection_revoke",
            ),
            *super().get_urls(),
        ]

    def revoke_view(self, request: HttpRequest, pk: int):
        if request.method != "POST":
            raise PermissionDenied
        conn = get_object_or_404(self.get_queryset(request), pk=pk)
        if not self._may_revoke(request, conn):
            raise PermissionDenied
        conn.revoke(reason=AgentConnection.RevokeReason.STAFF, by=request.user)
        messages.success(request, f"{conn.name} is revoked: its next call is refused.")
        return HttpResponseRedirect(reverse("admin:agents_agentconnection_changelist"))

    @admin.action(description="Revoke the selected agent connections", permissions=["revoke"])
    def revoke_selected(self, request, queryset) -> None:
        done = 0
        for conn in queryset.filter(revoked_at__isnull=True):
            if self._may_revoke(request, conn):
                conn.revoke(reason=AgentConnection.RevokeReason.STAFF, by=request.user)
                done += 1
        messages.success(request, f"{done} agent connection(s) revoked.")
