"""Staff roles and the one rule that scopes the admin to them.

- "Agency admin": everything.
- "Account manager": sees and acts only on the clients whose account manager they are, by every
  route (lists, pages, actions, search, autocomplete, exports, URL guessing): every client-related
  ModelAdmin filters its queryset through `ClientScopedAdminMixin`.
- "Support (read-only)": sees everything, changes nothing (view permissions only).

The groups and their permissions are created by a migration (agencyportal/migrations).
"""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import HttpRequest

AGENCY_ADMIN = "Agency admin"
ACCOUNT_MANAGER = "Account manager"
SUPPORT = "Support (read-only)"

# Groups whose members see every client.
_SEE_ALL = (AGENCY_ADMIN, SUPPORT)


def user_sees_all_clients(user) -> bool:
    """True for superusers, agency admins and support; account managers see only their clients."""
    return user.is_superuser or user.groups.filter(name__in=_SEE_ALL).exists()


def staff_sees_all_clients(request: HttpRequest) -> bool:
    """`user_sees_all_clients` for the request's user, asked once per request."""
    cached = getattr(request, "_sees_all_clients", None)
    if cached is None:
        cached = user_sees_all_clients(request.user)
        request._sees_all_clients = cached
    return cached


class ClientScopedAdminMixin:
    """Restrict a ModelAdmin to the rows of the clients the staff user may see.

    `client_path` is the lookup from the model to its Client ("" for Client itself). Because the
    changelist, the change page, actions, search, exports and autocomplete all start from
    `get_queryset`, filtering here covers every route; another manager's row is simply not found.
    """

    client_path: str = "client"

    def _client_filter(self) -> str:
        return f"{self.client_path}__account_manager" if self.client_path else "account_manager"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        if staff_sees_all_clients(request):
            return queryset
        return queryset.filter(**{self._client_filter(): request.user})

    def get_list_filter(self, request: HttpRequest):
        # The "account manager" filter would list every manager's name: only for those who see all.
        filters = super().get_list_filter(request)
        if staff_sees_all_clients(request):
            return filters
        return [f for f in filters if not (isinstance(f, str) and f.endswith("account_manager"))]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        # Choices in forms (e.g. the client of a new contact) are scoped the same way.
        from clients.models import Client

        if db_field.related_model is Client and not staff_sees_all_clients(request):
            kwargs["queryset"] = Client.objects.filter(account_manager=request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)
