"""Reads for connections: the due-work queries of the background engine, with their joins.

Each query matches a partial index declared on the model, so a sweep over 100k grants reads only
the rows that are due (the index holds live grants only, ordered by due time).
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import Exists, OuterRef, QuerySet

from .models import Alert, Grant, OAuthApp

# Grants the refresh engine keeps alive. `needs_reconsent` grants still get health checks (their
# tokens may work for what was granted) but their refresh is handled like any live grant's only if
# active; `disconnecting` / ended grants belong to the disconnect flow and are never refreshed.
REFRESHABLE_STATUSES = (Grant.Status.ACTIVE, Grant.Status.REFRESH_FAILING)
CHECKABLE_STATUSES = (Grant.Status.ACTIVE, Grant.Status.REFRESH_FAILING, Grant.Status.NEEDS_RECONSENT)


def grants_due_for_refresh(*, now: datetime) -> QuerySet[Grant]:
    """Live grants whose refresh is due, oldest due first (index connections_grant_refresh_due).

    No joins: the sweep only needs ids; the per-grant task loads the grant with its app.
    """
    return Grant.objects.filter(status__in=REFRESHABLE_STATUSES, next_refresh_at__lte=now).order_by("next_refresh_at")


def grants_due_for_check(*, now: datetime) -> QuerySet[Grant]:
    """Live grants whose health check is due (index connections_grant_check_due)."""
    return Grant.objects.filter(status__in=CHECKABLE_STATUSES, next_check_at__lte=now).order_by("next_check_at")


def _engine_grants(*, for_check: bool = False) -> QuerySet[Grant]:
    config_alert = Alert.objects.filter(
        app_id=OuterRef("app_id"), grant__isnull=True, kind=Alert.Kind.CLIENT_CONFIG, resolved_at__isnull=True
    )
    grants = Grant.objects.select_related("app", "client").annotate(app_config_alert_open=Exists(config_alert))
    if for_check:
        check_alert = Alert.objects.filter(
            grant_id=OuterRef("pk"),
            kind__in=[Alert.Kind.SCOPE_MISSING, Alert.Kind.HEALTH_FAILING],
            resolved_at__isnull=True,
        )
        grants = grants.annotate(check_alert_open=Exists(check_alert))
    return grants


def grant_for_engine(*, grant_id: int, for_check: bool = False) -> Grant | None:
    """One grant with what the refresh and check services touch (app credentials, client name), and
    whether its app has an open "credentials refused" alert (a success closes it). One query.

    `for_check`: also whether the grant has an open alert that a passing health check closes
    (`check_alert_open`), so a routine check writes one row and nothing else."""
    return _engine_grants(for_check=for_check).filter(pk=grant_id).first()


def grants_for_check(*, grant_ids: list[int]) -> dict[int, Grant]:
    """The grants of `grant_ids` as `grant_for_engine(for_check=True)` gives each, by id: one query
    for a whole batch of checks."""
    return {grant.pk: grant for grant in _engine_grants(for_check=True).filter(pk__in=grant_ids)}


def grants_attach_apps(grants: list[Grant], apps: dict[int, OAuthApp]) -> None:
    """Give each grant its OAuth app from `apps` (app id → app), a refresh task's cache: an app not
    in it is read once, with whether it has an open "credentials refused" alert
    (`config_alert_open`, copied to each grant as `app_config_alert_open`)."""
    missing = {grant.app_id for grant in grants} - set(apps)
    if missing:
        open_alerts = set(
            Alert.objects.filter(
                app_id__in=missing, grant__isnull=True, kind=Alert.Kind.CLIENT_CONFIG, resolved_at__isnull=True
            ).values_list("app_id", flat=True)
        )
        for app in OAuthApp.objects.filter(pk__in=missing):
            app.config_alert_open = app.pk in open_alerts
            apps[app.pk] = app
    for grant in grants:
        grant.app = apps[grant.app_id]
        grant.app_config_alert_open = grant.app.config_alert_open


def alerts_due_for_delivery(*, now: datetime) -> QuerySet[Alert]:
    """Undelivered alerts whose next attempt is due (index connections_alert_undelivered)."""
    return Alert.objects.filter(delivered_at__isnull=True, next_delivery_at__lte=now).order_by("next_delivery_at")


def alert_for_delivery(*, alert_id: int) -> Alert | None:
    """One alert with everything its email and webhook render (grant, client, account manager, app)."""
    return (
        Alert.objects.select_related("grant", "client__account_manager", "app", "grant__client")
        .filter(pk=alert_id)
        .first()
    )
