"""The action record in the admin, and the staff pages that run actions (DNS records, cache purge).

Staff pages run every action through `action_run` / `action_preview`, so the gate, the role rules
and the record apply exactly as for bulk changes. Writes go form → confirmation (before → after,
from read-only calls) → run.
"""

from __future__ import annotations

import csv
import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.http import urlencode

from agencyportal.admin_base import LargeTableAdminMixin
from agencyportal.exports import csv_row
from agencyportal.roles import ClientScopedAdminMixin, staff_sees_all_clients
from clients.models import Zone
from connections.admin import ReadOnlyAdminMixin
from connections.models import GRANT_SECRET_COLUMNS, Grant

from .catalogue import CATALOGUE
from .gate import Actor
from .inputs import RECORD_TYPES
from .models import ActionReadCount, ActionRecord
from .services import action_preview, action_run


@admin.register(ActionRecord)
class ActionRecordAdmin(LargeTableAdminMixin, ClientScopedAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "created_at",
        "action_id",
        "outcome",
        "client",
        "zone_name",
        "by",
        "actor_via",
        "duration_ms",
        "summary",
    )
    list_filter = ("outcome", "action_id", "kind", "actor_via", "client__account_manager", "created_at")
    search_fields = ("client__name", "zone_name", "action_id", "cf_user_id")
    # Every relation a column shows: one query for the page whatever its size.
    list_select_related = ("client", "actor")
    date_hierarchy = "created_at"
    raw_id_fields = ("actor", "client", "grant", "zone", "account")
    actions = ["export_csv"]

    @admin.display(description="By", ordering="actor")
    def by(self, obj: ActionRecord) -> str:
        who = obj.actor.get_username() if obj.actor_id else "—"
        if obj.actor_via == "agent":  # the agent's name, and the staff member it acts for
            return f"agent {obj.actor_label}, on behalf of {who}"
        return f"{who} ({obj.actor_label})" if obj.actor_label else who

    @admin.display(description="What was done")
    def summary(self, obj: ActionRecord) -> str:
        return obj.client_sentence if obj.succeeded else obj.reason[:160]

    @admin.action(description="Export selected actions as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset) -> HttpResponse:
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="actions.csv"'
        writer = csv.writer(response)
        header = [
            "at",
            "action",
            "kind",
            "outcome",
            "client",
            "zone",
            "cloudflare user",
            "actor",
            "via",
            "label",
            "inputs",
            "error codes",
            "reason",
            "result",
            "duration ms",
            "change item",
        ]
        writer.writerow(csv_row(header))
        for r in queryset.select_related("client", "actor").order_by("-created_at", "-id").iterator(chunk_size=2000):
            row = [
                r.created_at.isoformat(),
                r.action_id,
                r.kind,
                r.outcome,
                r.client.name,
                r.zone_name,
                r.cf_user_id,
                r.actor.get_username() if r.actor_id else "",
                r.actor_via,
                r.actor_label,
                json.dumps(r.inputs, sort_keys=True),
                " ".join(str(c) for c in r.error_codes),
                r.reason,
                json.dumps(r.result, sort_keys=True),
                r.duration_ms,
                r.change_item_id or "",
            ]
            writer.writerow(csv_row(row))
        return response

    # --- Staff pages -------------------------------------------------------------------------

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("zone/<int:zone_id>/dns/", wrap(self.dns_view), name="operations_dns"),
            path("zone/<int:zone_id>/dns/add/", wrap(self.record_add_view), name="operations_dns_add"),
            path(
                "zone/<int:zone_id>/dns/<str:record_id>/edit/", wrap(self.record_edit_view), name="operations_dns_edit"
            ),
            path(
                "zone/<int:zone_id>/dns/<str:record_id>/delete/",
                wrap(self.record_delete_view),
                name="operations_dns_delete",
            ),
            path("zone/<int:zone_id>/purge/", wrap(self.purge_view), name="operations_purge"),
            path("grant/<int:grant_id>/reconsent/", wrap(self.reconsent_view), name="operations_reconsent"),
            *super().get_urls(),
        ]

    def _zone(self, request: HttpRequest, zone_id: int) -> Zone:
        # Scoped like every client admin page: another manager's zone is simply not found.
        zones = Zone.objects.select_related("account__client")
        if not staff_sees_all_clients(request):
            zones = zones.filter(account__client__account_manager=request.user)
        return get_object_or_404(zones, pk=zone_id)

    def _render(self, request, template, zone, **context):
        return TemplateResponse(
            request,
            f"operations/{template}",
            {
                **self.admin_site.each_context(request),
                "zone": zone,
                "client": zone.account.client,
                "dns_url": reverse("admin:operations_dns", args=[zone.pk]),
                **context,
            },
        )

    def dns_view(self, request: HttpRequest, zone_id: int) -> HttpResponse:
        zone = self._zone(request, zone_id)
        record_type = request.GET.get("type", "")
        inputs = {"page": request.GET.get("page", "1"), "per_page": 50}
        if record_type:
            inputs["type"] = record_type
        if request.GET.get("name"):
            inputs["name"] = request.GET["name"]
        record = action_run(
            actor=Actor(user=request.user),
            action_id="dns.records.list",
            client=zone.account.client,
            zone=zone,
            inputs=inputs,
        )
        data = record.data or {}
        page, pages = data.get("page", 1), data.get("total_pages", 1)
        query = {k: v for k, v in (("type", record_type), ("name", request.GET.get("name", ""))) if v}
        return self._render(
            request,
            "dns_list.html",
            zone,
            title=f"DNS records of {zone.name}",
            record=record,
            records=data.get("records", []),
            page=page,
            pages=pages,
            total=data.get("total_count", 0),
            types=RECORD_TYPES,
            filter_type=record_type,
            filter_name=request.GET.get("name", ""),
            prev_url=f"?{urlencode({**query, 'page': page - 1})}" if page > 1 else "",
            next_url=f"?{urlencode({**query, 'page': page + 1})}" if page < pages else "",
        )

    def _write_flow(self, request, zone, *, action_id: str, inputs: dict, form_template: str, form_context: dict):
        """POST "preview" → confirmation page; POST "confirm" → run, message, back to the list."""
        actor = Actor(user=request.user)
        client = zone.account.client
        if request.method == "POST" and "confirm" in request.POST:
            try:
                inputs = json.loads(request.POST.get("inputs", "{}"))
            except ValueError:
                inputs = {}
            record = action_run(actor=actor, action_id=action_id, client=client, zone=zone, inputs=inputs)
            if record.succeeded:
                self.message_user(request, record.client_sentence or "Done.", messages.SUCCESS)
            else:
                self.message_user(request, f"{record.get_outcome_display()}: {record.reason}", messages.ERROR)
            target = "operations_dns" if action_id.startswith("dns.") else "operations_purge"
            return HttpResponseRedirect(reverse(f"admin:{target}", args=[zone.pk]))
        if request.method == "POST":
            preview = action_preview(actor=actor, action_id=action_id, client=client, zone=zone, inputs=inputs)
            if preview.ready:
                return self._render(
                    request,
                    "confirm.html",
                    zone,
                    title="Confirm the change",
                    preview=preview,
                    action=CATALOGUE[action_id],
                    inputs_json=json.dumps(inputs),
                )
            return self._render(request, form_template, zone, errors=preview.reasons, preview=preview, **form_context)
        return self._render(request, form_template, zone, errors=[], **form_context)

    def record_add_view(self, request: HttpRequest, zone_id: int) -> HttpResponse:
        zone = self._zone(request, zone_id)
        form = RecordForm(request.POST or None)
        inputs = form.inputs() if request.method == "POST" else {}
        return self._write_flow(
            request,
            zone,
            action_id="dns.record.create",
            inputs=inputs,
            form_template="record_form.html",
            form_context={"form": form, "title": f"Add a DNS record to {zone.name}"},
        )

    def record_edit_view(self, request: HttpRequest, zone_id: int, record_id: str) -> HttpResponse:
        zone = self._zone(request, zone_id)
        if request.method == "POST":
            form = RecordForm(request.POST)
            inputs = {"record_id": record_id, **form.inputs()}
        else:
            # The current values, through the gate (a read-only preview of "change nothing").
            current = action_preview(
                actor=Actor(user=request.user),
                action_id="dns.record.update",
                client=zone.account.client,
                zone=zone,
                inputs={"record_id": record_id},
            )
            if current.change is None:
                return self._render(
                    request,
                    "refused.html",
                    zone,
                    title="Cannot edit this record",
                    reasons=current.reasons,
                    preview=current,
                )
            form = RecordForm(initial={k: v for k, v in current.change.before.items() if v is not None})
            inputs = {}
        return self._write_flow(
            request,
            zone,
            action_id="dns.record.update",
            inputs=inputs,
            form_template="record_form.html",
            form_context={"form": form, "title": f"Change a DNS record of {zone.name}"},
        )

    def record_delete_view(self, request: HttpRequest, zone_id: int, record_id: str) -> HttpResponse:
        zone = self._zone(request, zone_id)
        if request.method != "POST":
            # Straight to the confirmation: a delete has no form, only its before.
            request.method = "POST"
        return self._write_flow(
            request,
            zone,
            action_id="dns.record.delete",
            inputs={"record_id": record_id},
            form_template="refused.html",
            form_context={"title": "Cannot delete this record"},
        )

    def purge_view(self, request: HttpRequest, zone_id: int) -> HttpResponse:
        zone = self._zone(request, zone_id)
        form = PurgeForm(request.POST or None)
        inputs = form.inputs() if request.method == "POST" else {}
        return self._write_flow(
            request,
            zone,
            action_id="cache.purge",
            inputs=inputs,
            form_template="purge_form.html",
            form_context={"form": form, "title": f"Purge the cache of {zone.name}"},
        )

    def reconsent_view(self, request: HttpRequest, grant_id: int) -> HttpResponse:
        from connections.services.reconsent import reconsent_link_send

        if request.method != "POST":
            raise Http404
        grants = Grant.objects.select_related("client", "app").defer(*GRANT_SECRET_COLUMNS)
        if not staff_sees_all_clients(request):
            grants = grants.filter(client__account_manager=request.user)
        grant = get_object_or_404(grants, pk=grant_id)
        if not request.user.has_perm("connections.change_grant"):
            raise PermissionDenied
        sent = reconsent_link_send(grant=grant, sent_by=request.user)
        if sent is None:
            self.message_user(request, "This grant misses nothing: no link sent.", messages.INFO)
        elif sent.recipients == 0:
            self.message_user(request, "The client has no joined owner contact: invite one first.", messages.WARNING)
        else:
            self.message_user(request, f"Sent a re-consent link to {sent.recipients} contact(s).", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:connections_grant_change", args=[grant.pk]))


class RecordForm(forms.Form):
    """Plain fields; the catalogue's input model does the validation (one set of rules)."""

    type = forms.ChoiceField(choices=[(t, t) for t in RECORD_TYPES])
    name = forms.CharField(max_length=253, help_text="www, @ for the zone itself, or a full name")
    content = forms.CharField(max_length=2048)
    ttl = forms.IntegerField(initial=1, help_text="1 = Automatic, or 60 to 86400 seconds")
    proxied = forms.BooleanField(required=False)
    priority = forms.IntegerField(required=False, help_text="MX only")
    comment = forms.CharField(max_length=100, required=False)

    def inputs(self) -> dict:
        data = {k: self.data.get(k, "") for k in ("type", "name", "content", "comment")}
        data["proxied"] = self.data.get("proxied") in ("on", "true", "1")
        for key in ("ttl", "priority"):
            value = (self.data.get(key) or "").strip()
            if value:
                data[key] = int(value) if value.lstrip("-").isdigit() else value
        return data


class PurgeForm(forms.Form):
    mode = forms.ChoiceField(
        choices=[
            ("everything", "Everything"),
            ("urls", "URLs"),
            ("hostnames", "Host names"),
            ("tags", "Cache tags"),
            ("prefixes", "URL prefixes"),
        ],
        widget=forms.RadioSelect,
        initial="everything",
    )
    values = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6}), required=False, help_text="One per line, 30 at most"
    )

    def inputs(self) -> dict:
        values = [v.strip() for v in (self.data.get("values") or "").splitlines() if v.strip()]
        return {"mode": self.data.get("mode", ""), "values": values}


@admin.register(ActionReadCount)
class ActionReadCountAdmin(ClientScopedAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("day", "action_id", "client", "actor", "actor_via", "count")
    list_filter = ("action_id", "actor_via", "day")
    list_select_related = ("client", "actor")
    raw_id_fields = ("client", "grant", "actor")
