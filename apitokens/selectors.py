"""Reads of the migration app, with their joins."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from operations.credentials import TokenCredential

from .mapping import scopes_of
from .models import TOKEN_SECRET_COLUMNS, ApiToken, ServiceKey, TokenAlert

# States in which a customer-delegated token still runs the client's actions.
BEFORE_CUTOVER = (
    ApiToken.State.TOKEN_ONLY,
    ApiToken.State.INVITED,
    ApiToken.State.CONNECTED,
    ApiToken.State.PARITY,
)
BOARD_STATES = [s for s, _ in ApiToken.State.choices]


def _secret_loader(token_id: int):
    def load() -> str:
        return ApiToken.objects.only("id", "token").get(pk=token_id).token

    return load


def token_credentials_for(client) -> list[TokenCredential]:
    """The client's customer-delegated tokens that still run its actions (one query, no secret)."""
    rows = (
        ApiToken.objects.filter(
            client_id=client.pk,
            purpose=ApiToken.Purpose.CUSTOMER,
            state__in=BEFORE_CUTOVER,
            status=ApiToken.Status.ACTIVE,
        )
        .defer(*TOKEN_SECRET_COLUMNS)
        .order_by("created_at", "id")
    )
    return [
        TokenCredential(
            token_id=t.pk,
            label=f"{t.name} ({t.fingerprint_short})",
            scopes=scopes_of(t.permission_groups),
            account_ids=frozenset(str(a.get("id")) for a in t.reach_accounts),
            zone_ids=frozenset(str(z.get("id")) for z in t.reach_zones),
            load_secret=_secret_loader(t.pk),
        )
        for t in rows
    ]


def token_verify_due_now(token_id: int) -> None:
    """An auth error with the token: verify it at the next sweep (evidence, not proof)."""
    ApiToken.objects.filter(pk=token_id).exclude(status=ApiToken.Status.ERASED).update(next_verify_at=timezone.now())


def tokens_due_for_verify(*, now) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(next_verify_at__lte=now).exclude(status=ApiToken.Status.ERASED)


def board_counts(queryset: QuerySet[ApiToken] | None = None) -> dict[str, int]:
    """Customer-delegated tokens per migration state (one query), within `queryset` (role-scoped)."""
    base = ApiToken.objects.all() if queryset is None else queryset
    rows = base.filter(purpose=ApiToken.Purpose.CUSTOMER).order_by().values("state").annotate(n=Count("id"))
    counts = dict.fromkeys(BOARD_STATES, 0)
    counts.update({r["state"]: r["n"] for r in rows})
    return counts


def tokens_and_grants_beyond_window(*, now) -> QuerySet[ApiToken]:
    """Clients with both a token still working and a grant, after the rollback window."""
    return ApiToken.objects.filter(
        purpose=ApiToken.Purpose.CUSTOMER,
        state__in=[ApiToken.State.CUT_OVER, ApiToken.State.REMOVING],
        standby_until__lt=now,
        status=ApiToken.Status.ACTIVE,
    )


def dashboard_tile(*, now=None, tokens: QuerySet[ApiToken] | None = None, alerts=None) -> dict[str, int]:
    now = now or timezone.now()
    tokens = ApiToken.objects.all() if tokens is None else tokens
    alerts = TokenAlert.objects.all() if alerts is None else alerts
    counts = tokens.aggregate(
        on_tokens=Count("id", filter=Q(purpose="customer", state__in=BEFORE_CUTOVER)),
        cut_over=Count("id", filter=Q(purpose="customer", state="cut_over")),
        overdue=Count(
            "id",
            filter=Q(
                purpose="customer",
                state__in=["cut_over", "removing"],
                standby_until__lt=now,
                status="active",
            ),
        ),
        internal=Count("id", filter=Q(purpose="internal") & ~Q(status="erased")),
    )
    counts["open_alerts"] = alerts.filter(resolved_at__isnull=True).count()
    return counts


def service_key_by_prefix(prefix: str) -> ServiceKey | None:
    return ServiceKey.objects.filter(prefix=prefix).prefetch_related("clients").first()
