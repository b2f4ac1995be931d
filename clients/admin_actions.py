"""Admin actions on clients, listed in `ClientAdmin.actions`."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from .forms import InviteContactForm
from .models import Client
from .services import member_invite


@admin.action(description="Invite a client contact", permissions=["change"])
def invite_contact(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Client]):
    """An intermediate page (like Django's delete confirmation): the form posts back to the
    change list with the same action and selection, plus `apply`."""
    clients = list(queryset[:2])
    if len(clients) != 1:
        modeladmin.message_user(request, "Select exactly one client to invite a contact to.", messages.WARNING)
        return None
    client = clients[0]
    form = InviteContactForm(request.POST if "apply" in request.POST else None)
    if form.is_bound and form.is_valid():
        try:
            result = member_invite(
                client=client, email=form.cleaned_data["email"], role=form.cleaned_data["role"], invited_by=request.user
            )
        except ValidationError as exc:
            form.add_error("email", exc)
        else:
            verb = "Invited" if result.created else "Sent a new invitation to"
            modeladmin.message_user(
                request, f"{verb} {result.member.user.email} as a contact of {client.name}.", messages.SUCCESS
            )
            return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": f"Invite a contact of {client.name}",
        "client": client,
        "form": form,
        "opts": modeladmin.model._meta,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "selected": [client.pk],
    }
    return TemplateResponse(request, "clients/admin_invite.html", context)
