"""Admin actions on grants, listed in `GrantAdmin.actions`."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from .models import LIVE_STATUSES, Grant, GrantEvent
from .services.disconnect import NotDisconnectable, grant_disconnect


@admin.action(description="Disconnect (revoke at Cloudflare)", permissions=["change"])
def disconnect_grants(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Grant]):
    """Confirmation page first (POST + CSRF, like Django's delete action), then disconnect each
    live grant: it stops being used at once and is revoked at Cloudflare in the background."""
    grants = list(queryset.select_related("client").filter(status__in=LIVE_STATUSES))
    if not grants:
        modeladmin.message_user(request, "None of the selected grants is live.", messages.WARNING)
        return None
    if request.POST.get("confirm") == "yes":
        done = 0
        for grant in grants:
            try:
                grant_disconnect(grant=grant, actor=request.user, actor_type=GrantEvent.Actor.STAFF)
            except NotDisconnectable:
                continue
            done += 1
        modeladmin.message_user(
            request, f"Disconnected {done} grant(s); revocation at Cloudflare is under way.", messages.SUCCESS
        )
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Disconnect grants?",
        "grants": grants,
        "opts": modeladmin.model._meta,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "connections/admin_disconnect_confirm.html", context)
