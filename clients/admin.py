"""Admin for clients, their portal users, Cloudflare accounts and zones.

Each changelist runs a fixed number of queries whatever the page size: relations shown in
`list_display` are in `list_select_related`, and counts come from annotations in `get_queryset`.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Case, Exists, F, Func, IntegerField, OuterRef, QuerySet, Subquery, Value, When
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from agencyportal.admin_base import IdSetSearchMixin, LabelledTabularInline, LargeTableAdminMixin, ReadOnlyTabularInline
from agencyportal.roles import ClientScopedAdminMixin, staff_sees_all_clients
from connections.models import GRANT_SECRET_COLUMNS, LIVE_STATUSES, Grant

from .admin_actions import invite_contact
from .models import Client, ClientMember, CloudflareAccount, Zone


class ClientMemberInline(LabelledTabularInline):
    model = ClientMember
    fk_name = "client"
    extra = 0
    fields = ("user", "role", "invited_at", "joined_at")
    # Contacts join through the "Invite a client contact" action (an email with a one-time link);
    # here staff only change a contact's role or remove them.
    readonly_fields = ("user", "invited_at", "joined_at")
    verbose_name_plural = "Contacts (portal users)"

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[ClientMember]:
        return super().get_queryset(request).select_related("user", "client")


class LatestGrantsFormSet(BaseInlineFormSet):
    def get_queryset(self):
        # The most recent ones only: a client with a hundred grants (every reconnection is one)
        # made its page render a hundred rows. "All grants" on the page links to the full list.
        if not hasattr(self, "_latest"):
            self._latest = super().get_queryset().order_by("-authorized_at", "-pk")[: GrantInline.SHOWN]
        return self._latest


class GrantInline(ReadOnlyTabularInline):
    """The client's latest grants on its page: who authorized, status, health, scope coverage."""

    model = Grant
    fk_name = "client"
    formset = LatestGrantsFormSet
    SHOWN = 20
    fields = ("cf_user_email", "status", "health", "coverage", "authorized_at", "last_refreshed_at")
    show_change_link = True
    verbose_name_plural = f"Cloudflare grants (the latest {SHOWN})"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Grant]:
        return super().get_queryset(request).select_related("app", "client").defer(*GRANT_SECRET_COLUMNS)

    @admin.display(description="Scopes")
    def coverage(self, obj: Grant) -> str:
        return obj.get_scope_coverage_display()


def _count(queryset: QuerySet) -> Subquery:
    """COUNT(*) of a queryset correlated with OuterRef, as an annotation (no GROUP BY outside)."""
    return Subquery(
        queryset.order_by().annotate(_n=Func(F("pk"), function="COUNT")).values("_n"), output_field=IntegerField()
    )


class ConnectionFilter(admin.SimpleListFilter):
    title = "connection"
    parameter_name = "connection"

    def lookups(self, request, model_admin):
        return [(key, label) for key, label in CONNECTION_LABELS.items()]

    def queryset(self, request, queryset):
        if self.value() in CONNECTION_LABELS:
            return queryset.filter(_connection=self.value())
        return queryset


CONNECTION_LABELS = {
    "connected": "Connected",
    "partial": "Partial (a permission missing or declined)",
    "broken": "Broken (revoked, lost or failing)",
    "none": "Not connected",
}


@admin.register(Client)
class ClientAdmin(LargeTableAdminMixin, ClientScopedAdminMixin, admin.ModelAdmin):
    client_path = ""
    list_display = (
        "name",
        "connection",
        "account_manager",
        "is_active",
        "members_count",
        "live_grants",
        "accounts_count",
        "zones_count",
        "created_at",
    )
    list_filter = (ConnectionFilter, "is_active", "account_manager")
    search_fields = ("name", "slug", "members__user__email", "cloudflare_accounts__name")
    list_select_related = ("account_manager",)
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("code", "created_at", "all_grants")
    inlines = [ClientMemberInline, GrantInline]
    actions = [invite_contact]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Client]:
        # Counts as annotations: one query for the page, not three per row. distinct=True
        # because the joins multiply rows.
        # The connection summary is derived from subqueries so it can be filtered and sorted.
        def grants(**filters):
            return Exists(Grant.objects.filter(client=OuterRef("pk"), **filters))

        return (
            super()
            .get_queryset(request)
            .annotate(
                # Counts as correlated subqueries: joining four one-to-many relations and counting
                # DISTINCT would multiply rows (members x grants x accounts x zones) first.
                _members=_count(ClientMember.objects.filter(client=OuterRef("pk"))),
                _live_grants=_count(Grant.objects.filter(client=OuterRef("pk"), status__in=LIVE_STATUSES)),
                _accounts=_count(CloudflareAccount.objects.filter(client=OuterRef("pk"), removed_at=None)),
                _zones=_count(Zone.objects.filter(account__client=OuterRef("pk"), removed_at=None)),
                _connection=Case(
                    When(grants(status=Grant.Status.REFRESH_FAILING), then=Value("broken")),
                    When(
                        ~grants(status__in=LIVE_STATUSES) & grants(status__in=["revoked", "lost"]), then=Value("broken")
                    ),
                    When(grants(status=Grant.Status.NEEDS_RECONSENT), then=Value("partial")),
                    When(
                        Exists(
                            Grant.objects.filter(client=OuterRef("pk"), status=Grant.Status.ACTIVE).exclude(
                                declined_scopes=[]
                            )
                        ),
                        then=Value("partial"),
                    ),
                    When(grants(status=Grant.Status.ACTIVE), then=Value("connected")),
                    default=Value("none"),
                ),
            )
        ).order_by("name")  # Meta.ordering is dropped from GROUP BY queries (autocomplete pages by it)

    @admin.display(description="Grants")
    def all_grants(self, obj: Client):
        if obj.pk is None:
            return "—"
        url = reverse("admin:connections_grant_changelist") + f"?client__id__exact={obj.pk}"
        return format_html('<a href="{}" id="client-all-grants">All grants of this client</a>', url)

    @admin.display(description="Connection", ordering="_connection")
    def connection(self, obj: Client) -> str:
        return CONNECTION_LABELS[obj._connection].split(" (")[0]

    @admin.display(description="Contacts", ordering="_members")
    def members_count(self, obj: Client) -> int:
        return obj._members

    @admin.display(description="Live grants", ordering="_live_grants")
    def live_grants(self, obj: Client) -> int:
        return obj._live_grants

    @admin.display(description="Cloudflare accounts", ordering="_accounts")
    def accounts_count(self, obj: Client) -> int:
        return obj._accounts

    @admin.display(description="Zones", ordering="_zones")
    def zones_count(self, obj: Client) -> int:
        return obj._zones


@admin.register(ClientMember)
class ClientMemberAdmin(ClientScopedAdminMixin, admin.ModelAdmin):
    list_display = ("user", "user__email", "client", "role", "invited_at", "joined_at")
    list_filter = ("role", ("joined_at", admin.EmptyFieldListFilter))
    search_fields = ("user__username", "user__email", "client__name")
    list_select_related = ("user", "client")
    autocomplete_fields = ("client",)
    # A contact is created by the "Invite a client contact" action (email + one-time link), never by
    # attaching an existing user here: that could turn any account, staff included, into a contact.
    readonly_fields = ("user", "invited_by", "invited_at", "joined_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


class ZoneInline(ReadOnlyTabularInline):
    model = Zone
    fields = ("name", "cf_zone_id", "status", "plan_name", "last_seen_at", "removed_at")
    show_change_link = True


@admin.register(CloudflareAccount)
class CloudflareAccountAdmin(LargeTableAdminMixin, IdSetSearchMixin, ClientScopedAdminMixin, admin.ModelAdmin):
    list_display = (
        "name",
        "cf_account_id",
        "client",
        "oauth_access_enabled",
        "zones_count",
        "last_seen_at",
        "removed_at",
    )
    list_filter = ("oauth_access_enabled", ("removed_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "cf_account_id", "client__name")
    list_select_related = ("client",)
    readonly_fields = ("cf_account_id", "first_seen_at", "last_seen_at", "removed_at")
    raw_id_fields = ("client",)
    inlines = [ZoneInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[CloudflareAccount]:
        # A correlated count, for the page's rows only: a Count() over the join grouped every
        # account's zones (50,000) before the LIMIT.
        return (
            super()
            .get_queryset(request)
            .annotate(_zones=_count(Zone.objects.filter(account=OuterRef("pk"), removed_at=None)))
        )

    @admin.display(description="Zones", ordering="_zones")
    def zones_count(self, obj: CloudflareAccount) -> int:
        return obj._zones


class ZoneClientFilter(admin.SimpleListFilter):
    """Zones of one client, as `?account__client__id__exact=<id>` (the client page and the bulk
    change flow link to it). The sidebar lists the clients only while they are few: a list of
    1,000 client names, gathered from 50,000 zones, was most of the zones page's time."""

    title = "client"
    parameter_name = "account__client__id__exact"
    LISTED = 50

    def lookups(self, request, model_admin):
        clients = Client.objects.order_by("name")
        if not staff_sees_all_clients(request):
            clients = clients.filter(account_manager=request.user)
        shown = list(clients.values_list("pk", "name")[: self.LISTED + 1])
        if len(shown) <= self.LISTED:
            return [(str(pk), name) for pk, name in shown]
        selected = self.value() if (self.value() or "").isdigit() else None
        return [(str(pk), name) for pk, name in clients.filter(pk=selected).values_list("pk", "name")]

    def queryset(self, request, queryset):
        if (self.value() or "").isdigit():
            return queryset.filter(account__client_id=self.value())
        return queryset


@admin.register(Zone)
class ZoneAdmin(LargeTableAdminMixin, IdSetSearchMixin, ClientScopedAdminMixin, admin.ModelAdmin):
    client_path = "account__client"
    list_display = ("name", "status", "plan_name", "account", "account__client", "last_seen_at", "removed_at")
    # Only the clients this staff member sees (an account manager: their own).
    list_filter = (
        "status",
        ("removed_at", admin.EmptyFieldListFilter),
        ZoneClientFilter,
    )
    search_fields = ("name", "cf_zone_id", "account__name", "account__client__name")
    list_select_related = ("account__client",)
    readonly_fields = ("cf_zone_id", "first_seen_at", "last_seen_at", "removed_at")
    raw_id_fields = ("account",)
    actions = ["start_bulk_change"]

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # ZoneClientFilter's parameter (Django allows only list_filter field paths); the list is
        # already scoped to the clients this staff member sees.
        return lookup == ZoneClientFilter.parameter_name or super().lookup_allowed(lookup, value, request)

    @admin.action(description="Start a bulk change on the selected zones", permissions=["bulk_change"])
    def start_bulk_change(self, request, queryset):
        # The changes app owns the page; the zones list is where staff pick the zones.
        from changes.admin import bulk_change_form

        return bulk_change_form(self, request, queryset)

    def has_bulk_change_permission(self, request) -> bool:
        return request.user.has_perm("changes.add_change")
