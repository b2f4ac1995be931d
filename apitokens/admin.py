"""The migration in the admin: token inventory (form and CSV import with a preview), the
migration board, each step as a button, service keys (shown once) and verification runs."""

from __future__ import annotations

import csv

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from agencyportal.admin_base import LargeTableAdminMixin
from agencyportal.exports import csv_row
from agencyportal.roles import ClientScopedAdminMixin, staff_sees_all_clients
from clients.models import Zone
from connections import crypto
from connections.admin import ReadOnlyAdminMixin

from . import keys, services
from .forms import ApiTokenAddForm, BoardFilterForm, CsvUploadForm, OverrideForm, ServiceKeyForm, VerificationStartForm
from .mapping import table as mapping_table
from .models import TOKEN_SECRET_COLUMNS, ApiToken, ApiTokenEvent, ServiceKey, TokenAlert, VerificationRun
from .selectors import board_counts
from .tasks import verification_run_task

SESSION_PREVIEW = "apitokens_csv_preview"


class EventInline(admin.TabularInline):
    model = ApiTokenEvent
    fields = ("at", "kind", "message", "actor")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("-at",)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        # The actor column: joined, one query for the trail whatever its length.
        return super().get_queryset(request).select_related("actor")


@admin.register(ApiToken)
class ApiTokenAdmin(LargeTableAdminMixin, ClientScopedAdminMixin, admin.ModelAdmin):
    list_display = (
        "name",
        "client",
        "purpose",
        "status",
        "state",
        "fingerprint",
        "expires_on",
        "scopes",
        "blocked",
        "last_verified_at",
    )
    list_filter = ("purpose", "state", "status", "client__account_manager")
    search_fields = ("name", "client__name", "cf_token_id")
    # Every relation a column shows: one query for the page whatever its size.
    list_select_related = ("client",)
    inlines = [EventInline]
    actions = ["verify_now", "send_invite", "check_parity", "keep_internal", "export_csv"]
    readonly_fields = (
        "fingerprint",
        "client",
        "owner",
        "owner_account_id",
        "cf_token_id",
        "status",
        "issued_on",
        "expires_on",
        "not_before",
        "permissions_shown",
        "reach_shown",
        "mapping_shown",
        "state",
        "grant",
        "parity_shown",
        "override_reason",
        "override_by",
        "cut_over_at",
        "standby_until",
        "removed_at",
        "removal_how",
        "last_verified_at",
        "last_error",
    )
    fieldsets = (
        (None, {"fields": ("name", "client", "purpose", "fingerprint", "notes")}),
        (
            "At Cloudflare",
            {
                "fields": (
                    "owner",
                    "owner_account_id",
                    "cf_token_id",
                    "status",
                    "issued_on",
                    "expires_on",
                    "not_before",
                    "last_verified_at",
                    "last_error",
                )
            },
        ),
        ("Permissions and reach", {"fields": ("permissions_shown", "reach_shown", "mapping_shown")}),
        (
            "Migration",
            {
                "fields": (
                    "state",
                    "grant",
                    "parity_shown",
                    "override_reason",
                    "override_by",
                    "cut_over_at",
                    "standby_until",
                    "removed_at",
                    "removal_how",
                )
            },
        ),
    )
    change_form_template = "admin/apitokens/apitoken/change_form.html"
    change_list_template = "admin/apitokens/apitoken/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # The token is never needed by a page: not loaded, not decrypted.
        return super().get_queryset(request).defer(*TOKEN_SECRET_COLUMNS)

    def lookup_allowed(self, lookup: str, value, request=None) -> bool:
        if lookup.startswith("token") and not lookup.startswith("token_fp"):
            return False
        return super().lookup_allowed(lookup, value, request)

    # --- display

    @admin.display(description="Fingerprint")
    def fingerprint(self, obj: ApiToken) -> str:
        return obj.fingerprint_short

    @admin.display(description="Mapped scopes")
    def scopes(self, obj: ApiToken) -> str:
        return ", ".join(obj.mapped_scopes)

    @admin.display(description="Blocked", boolean=True)
    def blocked(self, obj: ApiToken) -> bool:
        return bool(obj.blockers)

    @admin.display(description="Permission groups")
    def permissions_shown(self, obj: ApiToken) -> str:
        source = obj.get_permissions_source_display()
        return f"{', '.join(obj.permission_groups) or '—'} ({source})"

    @admin.display(description="Reach")
    def reach_shown(self, obj: ApiToken) -> str:
        return f"Accounts: {', '.join(obj.account_names) or '—'}; zones: {', '.join(obj.zone_names) or '—'}"

    @admin.display(description="Mapping")
    def mapping_shown(self, obj: ApiToken) -> str:
        from .mapping import token_mapping

        mapping = token_mapping(obj.permission_groups)
        parts = [f"Scopes to request: {', '.join(mapping.scopes)}"]
        parts.append("Actions after the switch: " + (", ".join(a.id for a in mapping.actions) or "none"))
        if mapping.unused:
            parts.append(f"Not requested (no action uses them): {', '.join(mapping.unused)}")
        for group, why in mapping.blockers:
            parts.append(f"BLOCKER {group}: {why}")
        return format_html_join("", "<div>{}</div>", ((p,) for p in parts))

    @admin.display(description="Parity")
    def parity_shown(self, obj: ApiToken) -> str:
        if obj.parity_checked_at is None:
            return "Not checked yet"
        return "; ".join(obj.parity_diff) or "The connection covers the token"

    # --- add: the form and the service

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenAddForm
            kwargs["fields"] = None
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return (
                (None, {"fields": ("client", "name", "secret", "purpose", "owner_account_id", "declared", "notes")}),
            )
        return super().get_fieldsets(request, obj)

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def get_inlines(self, request, obj):
        return [] if obj is None else self.inlines

    def save_model(self, request, obj, form, change) -> None:
        if change:
            obj.save(update_fields=["name", "purpose", "notes", "updated_at"])
            return
        try:
            created = services.api_token_create(
                client=form.cleaned_data["client"],
                name=form.cleaned_data["name"],
                token=form.cleaned_data["secret"],
                purpose=form.cleaned_data["purpose"],
                owner_account_id=form.cleaned_data.get("owner_account_id", ""),
                permissions=form.cleaned_data.get("declared") or [],
                notes=form.cleaned_data.get("notes", ""),
                created_by=request.user,
            )
        except ValidationError as exc:
            raise _FormError(exc) from exc
        obj.pk = created.pk

    def add_view(self, request, form_url="", extra_context=None):
        try:
            return super().add_view(request, form_url, extra_context)
        except _FormError as exc:
            messages.error(request, " ".join(exc.error.messages))
            return HttpResponseRedirect(request.path)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # tokens are erased through removal, never deleted (the trail stays)

    # --- actions

    @admin.action(description="Verify now at Cloudflare")
    def verify_now(self, request, queryset) -> None:
        n = 0
        for token in queryset:
            if services.api_token_verify(token_id=token.pk) is not None:
                n += 1
        self.message_user(request, f"Verified {n} token(s).")

    @admin.action(description="Send the migration invitation")
    def send_invite(self, request, queryset) -> None:
        for token in queryset:
            try:
                services.migration_invite(token=token, sent_by=request.user)
                self.message_user(request, f"Invitation sent for {token.client.name}.")
            except services.MigrationError as exc:
                self.message_user(request, f"{token.client.name}: {exc}", messages.WARNING)

    @admin.action(description="Check parity now")
    def check_parity(self, request, queryset) -> None:
        for token in queryset:
            token = services.parity_check(token=token)
            self.message_user(request, f"{token.client.name}: {token.get_state_display()}")

    @admin.action(description="Keep as internal automation (not migrated)")
    def keep_internal(self, request, queryset) -> None:
        n = 0
        for token in queryset.filter(purpose=ApiToken.Purpose.CUSTOMER, state=ApiToken.State.TOKEN_ONLY):
            ApiToken.objects.filter(pk=token.pk).update(purpose=ApiToken.Purpose.INTERNAL)
            services.event_record(
                token=token, kind="kept_internal", actor=request.user, message="Kept as internal automation"
            )
            n += 1
        self.message_user(request, f"{n} token(s) kept as internal automation.")

    @admin.action(description="Export selected as CSV", permissions=["view"])
    def export_csv(self, request, queryset) -> HttpResponse:
        return _board_csv(queryset.select_related("client"))

    # --- the board, the CSV import and the step buttons

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("board/", wrap(self.board_view), name="apitokens_board"),
            path("board/export/", wrap(self.board_export), name="apitokens_board_export"),
            path("import/", wrap(self.import_view), name="apitokens_import"),
            path("<int:pk>/step/<str:step>/", wrap(self.step_view), name="apitokens_step"),
            *super().get_urls(),
        ]

    def _board_queryset(self, request) -> tuple[QuerySet, BoardFilterForm]:
        form = BoardFilterForm(request.GET or None)
        queryset = (
            self.get_queryset(request).filter(purpose=ApiToken.Purpose.CUSTOMER).select_related("client", "grant")
        )
        if form.is_valid():
            if form.cleaned_data.get("state"):
                queryset = queryset.filter(state=form.cleaned_data["state"])
            if form.cleaned_data.get("client"):
                queryset = queryset.filter(client=form.cleaned_data["client"])
        return queryset.order_by("client__name", "name"), form

    # Rows per table on the board: rendering is its cost (500 rows took 300 ms); the counts per
    # state cover every token, the filters and the CSV export reach the rest.
    BOARD_ROWS = 100

    def board_view(self, request: HttpRequest) -> TemplateResponse:
        queryset, form = self._board_queryset(request)
        internal = (
            self.get_queryset(request)
            .filter(purpose=ApiToken.Purpose.INTERNAL)
            .exclude(status=ApiToken.Status.ERASED)
            .select_related("client")
        )
        counts = board_counts(self.get_queryset(request))
        # One row more than shown tells whether to say "filter to see the others".
        tokens, kept = list(queryset[: self.BOARD_ROWS + 1]), list(internal[: self.BOARD_ROWS + 1])
        context = {
            **self.admin_site.each_context(request),
            "title": "Migration board",
            "opts": self.model._meta,
            "states": [(s, label, counts[s]) for s, label in ApiToken.State.choices],
            "tokens": tokens[: self.BOARD_ROWS],
            "tokens_more": len(tokens) > self.BOARD_ROWS,
            "internal": kept[: self.BOARD_ROWS],
            "internal_more": len(kept) > self.BOARD_ROWS,
            "board_rows": self.BOARD_ROWS,
            "form": form,
            "mapping": mapping_table(),
            "query": request.GET.urlencode(),
        }
        return TemplateResponse(request, "admin/apitokens/board.html", context)

    def board_export(self, request: HttpRequest) -> HttpResponse:
        queryset, _ = self._board_queryset(request)
        return _board_csv(queryset)

    def import_view(self, request: HttpRequest) -> TemplateResponse | HttpResponseRedirect:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = CsvUploadForm()
        rows = None
        if request.method == "POST" and "confirm" in request.POST:
            stored = request.session.pop(SESSION_PREVIEW, None)
            try:
                text = crypto.decrypt(stored) if stored else None
            except crypto.TokenDecryptionError:
                text = None
            if text is None:
                messages.error(request, "The preview expired: upload the file again.")
                return HttpResponseRedirect(request.path)
            rows = services.csv_preview(text)
            created = services.csv_import(rows, created_by=request.user, source="CSV upload")
            bad = [r for r in rows if not r.ok]
            messages.success(request, f"Imported {len(created)} token(s); {len(bad)} row(s) skipped.")
            return HttpResponseRedirect(reverse("admin:apitokens_apitoken_changelist"))
        if request.method == "POST":
            form = CsvUploadForm(request.POST, request.FILES)
            if form.is_valid():
                raw = form.cleaned_data["file"].read(2 * 1024 * 1024 + 1)
                if len(raw) > 2 * 1024 * 1024:
                    form.add_error("file", "The file is larger than 2 MB.")
                else:
                    text = raw.decode("utf-8-sig", "replace")
                    rows = services.csv_preview(text)
                    # Kept for the confirmation only, encrypted like the tokens themselves (the
                    # session row is not a place for a secret in clear), and removed at once.
                    request.session[SESSION_PREVIEW] = crypto.encrypt(text)
        context = {
            **self.admin_site.each_context(request),
            "title": "Import API tokens from CSV",
            "opts": self.model._meta,
            "form": form,
            "rows": rows,
            "valid": sum(1 for r in rows or [] if r.ok),
        }
        return TemplateResponse(request, "admin/apitokens/import.html", context)

    def step_view(self, request: HttpRequest, pk: int, step: str):
        token = get_object_or_404(self.get_queryset(request), pk=pk)
        if not self.has_change_permission(request, token):
            raise PermissionDenied
        change_url = reverse("admin:apitokens_apitoken_change", args=[token.pk])
        if step == "override":
            form = OverrideForm(request.POST or None)
            if request.method == "POST" and form.is_valid():
                try:
                    services.parity_override(token=token, by=request.user, reason=form.cleaned_data["reason"])
                    messages.success(request, "Parity overridden; the reason is recorded.")
                    return HttpResponseRedirect(change_url)
                except services.MigrationError as exc:
                    form.add_error("reason", str(exc))
            context = {
                **self.admin_site.each_context(request),
                "title": f"Override parity for {token.client.name}",
                "opts": self.model._meta,
                "token": token,
                "form": form,
            }
            return TemplateResponse(request, "admin/apitokens/override.html", context)
        if request.method != "POST":
            return HttpResponseRedirect(change_url)
        steps = {
            "verify": lambda: services.api_token_verify(token_id=token.pk),
            "invite": lambda: services.migration_invite(token=token, sent_by=request.user),
            "parity": lambda: services.parity_check(token=token),
            "cutover": lambda: services.cutover(token=token, by=request.user),
            "rollback": lambda: services.rollback(token=token, by=request.user),
            "remove": lambda: services.removal_start(token=ApiToken.objects.get(pk=token.pk), by=request.user),
            "erase": lambda: services.api_token_erase(
                token=token, actor=request.user, how="staff_confirmed", message="Erased on staff confirmation"
            ),
        }
        if step not in steps:
            raise PermissionDenied
        if step == "erase" and request.POST.get("confirm") != "yes":
            messages.error(request, "Confirm the erasure.")
            return HttpResponseRedirect(change_url)
        try:
            steps[step]()
            messages.success(request, f"{step.capitalize()}: done.")
        except services.MigrationError as exc:
            messages.error(request, str(exc))
        return HttpResponseRedirect(change_url)


class _FormError(Exception):
    def __init__(self, error: ValidationError) -> None:
        super().__init__(str(error))
        self.error = error


def _board_csv(queryset) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="migration-board.csv"'
    writer = csv.writer(response)
    writer.writerow(
        [
            "client",
            "token",
            "fingerprint",
            "state",
            "status",
            "expires",
            "mapped scopes",
            "blockers",
            "parity",
            "cut over",
            "standby until",
            "removed",
        ]
    )
    for t in queryset:
        writer.writerow(
            csv_row(
                [
                    t.client.name,
                    t.name,
                    t.fingerprint_short,
                    t.get_state_display(),
                    t.get_status_display(),
                    t.expires_on.isoformat() if t.expires_on else "",
                    " ".join(t.mapped_scopes),
                    "; ".join(b[0] for b in t.blockers),
                    "; ".join(t.parity_diff),
                    t.cut_over_at.isoformat() if t.cut_over_at else "",
                    t.standby_until.isoformat() if t.standby_until else "",
                    t.removed_at.isoformat() if t.removed_at else "",
                ]
            )
        )
    return response


@admin.register(TokenAlert)
class TokenAlertAdmin(ClientScopedAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "kind", "client", "token", "message", "resolved_at", "email_status", "webhook_status")
    list_filter = ("kind", "resolved_at")
    list_select_related = ("client", "token")

    def get_queryset(self, request):
        return super().get_queryset(request).defer("token__token")


@admin.register(ServiceKey)
class ServiceKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix_shown", "client_names", "actions", "expires_at", "revoked_at", "last_used_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix")
    readonly_fields = ("name", "prefix_shown", "actions", "expires_at", "revoked_at", "last_used_at", "created_by")
    exclude = ("key_hash", "clients", "prefix")
    actions = ["revoke"]

    def get_queryset(self, request):
        # The client names column: one extra query for the page, whatever its size.
        return super().get_queryset(request).prefetch_related("clients")

    def has_change_permission(self, request, obj=None) -> bool:
        return False if obj is not None else super().has_change_permission(request, obj)

    @admin.display(description="Key")
    def prefix_shown(self, obj: ServiceKey) -> str:
        return f"{keys.KEY_PREFIX}{obj.prefix}_…"

    @admin.display(description="Clients")
    def client_names(self, obj: ServiceKey) -> str:
        return ", ".join(c.name for c in obj.clients.all())

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset) -> None:
        for key in queryset:
            keys.service_key_revoke(key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ServiceKeyForm(request.POST or None)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "title": "New service key"}
        if request.method == "POST" and form.is_valid():
            try:
                key, raw = keys.service_key_create(
                    name=form.cleaned_data["name"],
                    clients=form.cleaned_data["clients"],
                    actions=form.cleaned_data["actions"],
                    expires_at=form.cleaned_data["expires_at"],
                    created_by=request.user,
                )
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                # Shown once, on this response only: never stored, never in a message or a URL.
                response = TemplateResponse(
                    request, "admin/apitokens/service_key_created.html", {**context, "key": key, "raw": raw}
                )
                response["Cache-Control"] = "no-store"
                return response
        return TemplateResponse(request, "admin/apitokens/service_key_form.html", {**context, "form": form})


@admin.register(VerificationRun)
class VerificationRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("app", "outcome", "started_at", "finished_at", "started_by")
    list_filter = ("outcome", "app")
    list_select_related = ("app", "started_by")
    readonly_fields = ("app", "outcome", "report", "name_confirmed_by", "started_by", "started_at", "finished_at")
    exclude = ("steps",)

    def has_add_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser or staff_sees_all_clients(request)

    @admin.display(description="Report")
    def report(self, obj: VerificationRun) -> str:
        return format_html(
            "<table>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                ((s["at"], s["step"], "passed" if s["ok"] else "FAILED", s["evidence"]) for s in obj.steps),
            ),
        )

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = VerificationStartForm(request.POST or None)
        zones = Zone.objects.filter(removed_at__isnull=True).select_related("account__client")
        zone_id = request.POST.get("zone") if request.method == "POST" else None
        if request.method == "POST" and form.is_valid() and zone_id:
            zone = get_object_or_404(zones, pk=zone_id)
            # The run takes the refresh window (a minute or more): a worker runs it, the report fills in.
            args = [form.cleaned_data["app"].pk, zone.pk, request.user.pk, form.cleaned_data["name_confirmed"]]
            transaction.on_commit(lambda: verification_run_task.delay(*args))
            messages.success(request, "The verification run started; its report appears below when a worker runs it.")
            return HttpResponseRedirect(reverse("admin:apitokens_verificationrun_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Start a verification run",
            "form": form,
            "zones": zones[:200],
            "now": timezone.now(),
        }
        return TemplateResponse(request, "admin/apitokens/verification_start.html", context)
