"""Bulk changes in the admin: start from the zones list, see the dry run, confirm, watch it run.

Flow: Zones list → select zones (across clients) → action "Start a bulk change" → pick the plan and
its inputs → the dry run runs on the workers (live progress) → per zone: what will change, what is
refused and why → "Run on N zones" → live progress → per item outcome; "Resume" queues the blocked
items again after the client reconnected.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse

from agencyportal.roles import staff_sees_all_clients
from clients.models import Zone
from operations.inputs import RECORD_TYPES

from .models import Change, ChangeItem
from .plans import PLANS, plan_get
from .services import ChangeInputError, change_cancel, change_confirm, change_counts, change_create, change_resume

ITEMS_PER_PAGE = 100
PURGE_MODES = [
    ("everything", "Everything"),
    ("tags", "Cache tags"),
    ("prefixes", "URL prefixes"),
    ("hostnames", "Host names"),
    ("urls", "URLs"),
]


class BulkChangeForm(forms.Form):
    """Plain fields; the plan's input model does the validation (the catalogue's rules)."""

    plan = forms.ChoiceField(
        choices=[(p.id, p.label) for p in PLANS.values()], widget=forms.RadioSelect, initial="dns.record.create"
    )
    create_type = forms.ChoiceField(label="Type", choices=[(t, t) for t in RECORD_TYPES], initial="TXT")
    create_name = forms.CharField(label="Name", required=False, help_text="www, @ for each zone itself, or _verify")
    create_content = forms.CharField(label="Content", required=False, max_length=2048)
    create_ttl = forms.IntegerField(label="TTL", initial=1, required=False, help_text="1 = Automatic")
    create_proxied = forms.BooleanField(label="Proxied", required=False)
    create_priority = forms.IntegerField(label="Priority", required=False, help_text="MX only")
    create_comment = forms.CharField(label="Comment", required=False, max_length=100)
    set_type = forms.ChoiceField(label="Type", choices=[(t, t) for t in RECORD_TYPES], initial="A")
    set_name = forms.CharField(label="Name", required=False, help_text="The same name in every zone: www, @ ...")
    set_content = forms.CharField(label="New content", required=False, max_length=2048)
    purge_mode = forms.ChoiceField(label="Purge", choices=PURGE_MODES, widget=forms.RadioSelect, initial="everything")
    purge_values = forms.CharField(
        label="List", widget=forms.Textarea(attrs={"rows": 4}), required=False, help_text="One per line, 30 at most"
    )

    def plan_inputs(self) -> tuple[str, dict]:
        data = self.data
        plan = data.get("plan", "")
        if plan == "dns.record.create":
            inputs = {k: data.get(f"create_{k}", "") for k in ("type", "name", "content", "comment")}
            inputs["proxied"] = data.get("create_proxied") in ("on", "true", "1")
            for key in ("ttl", "priority"):
                value = (data.get(f"create_{key}") or "").strip()
                if value:
                    inputs[key] = int(value) if value.lstrip("-").isdigit() else value
        elif plan == "dns.records.set_content":
            inputs = {k: data.get(f"set_{k}", "") for k in ("type", "name", "content")}
        elif plan == "cache.purge":
            values = [v.strip() for v in (data.get("purge_values") or "").splitlines() if v.strip()]
            inputs = {"mode": data.get("purge_mode", ""), "values": values}
        else:
            inputs = {}
        return plan, inputs


def _visible_zones(request: HttpRequest) -> QuerySet[Zone]:
    zones = Zone.objects.select_related("account__client").filter(removed_at__isnull=True)
    if not staff_sees_all_clients(request):
        zones = zones.filter(account__client__account_manager=request.user)
    return zones


def bulk_change_form(
    modeladmin, request: HttpRequest, queryset: QuerySet[Zone], *, form=None, errors=()
) -> HttpResponse:
    """The page that starts a bulk change for the selected zones (used by the Zones list action)."""
    if not request.user.has_perm("changes.add_change"):
        raise PermissionDenied
    zones = list(queryset.select_related("account__client").filter(removed_at__isnull=True).order_by("name"))
    site = modeladmin.admin_site
    return TemplateResponse(
        request,
        "admin/changes/change/new.html",
        {
            **site.each_context(request),
            "title": "Start a bulk change",
            "zones": zones,
            "clients": sorted({z.account.client.name for z in zones}),
            "form": form or BulkChangeForm(),
            "errors": list(errors),
            "new_url": reverse("admin:changes_change_new"),
        },
    )


@admin.register(Change)
class ChangeAdmin(admin.ModelAdmin):
    list_display = ("id", "what", "status", "zone_count", "created_by", "created_at", "finished_at")
    list_filter = ("status", "plan")
    list_select_related = ("created_by",)
    ordering = ("-created_at",)

    def get_queryset(self, request):
        changes = super().get_queryset(request).annotate(_zones=Count("items"))
        if not staff_sees_all_clients(request):
            # An account manager sees the changes they started (items of other clients were refused).
            changes = changes.filter(created_by=request.user)
        return changes

    @admin.display(description="Change")
    def what(self, obj: Change) -> str:
        return plan_get(obj.plan).summary(obj.inputs)

    @admin.display(description="Zones", ordering="_zones")
    def zone_count(self, obj: Change) -> int:
        return obj._zones

    def has_add_permission(self, request):
        return False  # started from the Zones list (pick the zones there)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("new/", wrap(self.new_view), name="changes_change_new"),
            path("<int:change_id>/progress/", wrap(self.progress_view), name="changes_change_progress"),
            path("<int:change_id>/confirm/", wrap(self.confirm_view), name="changes_change_confirm"),
            path("<int:change_id>/resume/", wrap(self.resume_view), name="changes_change_resume"),
            path("<int:change_id>/cancel/", wrap(self.cancel_view), name="changes_change_cancel"),
            *super().get_urls(),
        ]

    def _change(self, request: HttpRequest, change_id: int) -> Change:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return get_object_or_404(self.get_queryset(request).select_related("created_by", "confirmed_by"), pk=change_id)

    def new_view(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:clients_zone_changelist"))
        if not request.user.has_perm("changes.add_change"):
            raise PermissionDenied
        ids = [int(i) for i in request.POST.getlist("zones") if i.isdigit()]
        zones = _visible_zones(request).filter(pk__in=ids)
        form = BulkChangeForm(request.POST)
        plan_id, inputs = form.plan_inputs()
        try:
            change = change_create(user=request.user, plan_id=plan_id, inputs=inputs, zones=zones)
        except ChangeInputError as exc:
            return bulk_change_form(self, request, zones, form=form, errors=exc.errors)
        return HttpResponseRedirect(reverse("admin:changes_change_change", args=[change.pk]))

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        if not object_id.isdigit():
            raise Http404
        change = self._change(request, int(object_id))
        items = ChangeItem.objects.filter(change=change).select_related("client").order_by("zone_name", "id")
        status_filter = request.GET.get("status", "")
        if status_filter in ChangeItem.Status.values:
            items = items.filter(status=status_filter)
        page = Paginator(items, ITEMS_PER_PAGE).get_page(request.GET.get("page"))
        counts = change_counts(change.pk)
        return TemplateResponse(
            request,
            "admin/changes/change/detail.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Bulk change #{change.pk}: {plan_get(change.plan).summary(change.inputs)}",
                "change": change,
                "plan": plan_get(change.plan),
                "page": page,
                "counts": counts,
                "count_rows": [
                    (s.value, s.label, counts.get(s.value, 0)) for s in ChangeItem.Status if counts.get(s.value)
                ],
                "total": sum(counts.values()),
                "ready": counts.get("ready", 0),
                "blocked": counts.get("blocked", 0),
                "status_filter": status_filter,
                "progress_url": reverse("admin:changes_change_progress", args=[change.pk]),
                "opts": self.model._meta,
                "can_run": request.user.has_perm("changes.add_change"),
            },
        )

    def progress_view(self, request: HttpRequest, change_id: int) -> JsonResponse:
        """What the page polls: the change's status, counts, and the shown items' statuses."""
        change = self._change(request, change_id)
        counts = change_counts(change.pk)
        shown = [int(i) for i in request.GET.get("items", "").split(",") if i.isdigit()][:ITEMS_PER_PAGE]
        rows = ChangeItem.objects.filter(change=change, pk__in=shown).values("id", "status", "reason")
        labels = dict(ChangeItem.Status.choices)
        response = JsonResponse(
            {
                "status": change.status,
                "status_label": change.get_status_display(),
                "counts": counts,
                "count_rows": [[v, label, counts[v]] for v, label in labels.items() if counts.get(v)],
                "total": sum(counts.values()),
                "open": sum(counts.get(s, 0) for s in ("pending", "queued", "running")),
                "items": [{**r, "label": labels.get(r["status"], r["status"])} for r in rows],
            }
        )
        response["Cache-Control"] = "no-store"
        return response

    def _post_only(self, request):
        if request.method != "POST":
            raise Http404
        if not request.user.has_perm("changes.add_change"):
            raise PermissionDenied

    def confirm_view(self, request: HttpRequest, change_id: int) -> HttpResponse:
        self._post_only(request)
        change = self._change(request, change_id)
        queued = change_confirm(change=change, user=request.user)
        if queued:
            self.message_user(request, f"Running on {queued} zone(s).", messages.SUCCESS)
        else:
            self.message_user(request, "Nothing to run: the dry run found no zone to change.", messages.WARNING)
        return HttpResponseRedirect(reverse("admin:changes_change_change", args=[change.pk]))

    def resume_view(self, request: HttpRequest, change_id: int) -> HttpResponse:
        self._post_only(request)
        change = self._change(request, change_id)
        queued = change_resume(change=change, user=request.user)
        if queued:
            self.message_user(request, f"Resumed: {queued} blocked zone(s) queued again.", messages.SUCCESS)
        else:
            self.message_user(request, "Nothing to resume.", messages.WARNING)
        return HttpResponseRedirect(reverse("admin:changes_change_change", args=[change.pk]))

    def cancel_view(self, request: HttpRequest, change_id: int) -> HttpResponse:
        self._post_only(request)
        change = self._change(request, change_id)
        if change_cancel(change=change):
            self.message_user(request, "Cancelled: nothing was run.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:changes_change_change", args=[change.pk]))
