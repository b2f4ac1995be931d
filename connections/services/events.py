"""The audit trail (GrantEvent) and the alert outbox (Alert).

Both are written inside the caller's transaction, next to the state change they describe: the
event and the alert exist if and only if the change committed. Delivery happens after commit.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from clients.models import Client

from ..models import Alert, AuthorizationRequest, Grant, GrantEvent, OAuthApp


def event_record(
    *,
    client: Client | None = None,
    kind: str,
    grant: Grant | None = None,
    actor_type: str = GrantEvent.Actor.SYSTEM,
    actor: AbstractBaseUser | None = None,
    message: str = "",
    detail: dict[str, Any] | None = None,
    authorization_request: AuthorizationRequest | None = None,
) -> GrantEvent:
    """Append one event. `detail` must never hold a secret: callers pass ids, names, codes."""
    if client is None:
        if grant is None:
            raise ValueError("event_record needs a client or a grant")
        client = grant.client
    return GrantEvent.objects.create(
        client=client,
        grant=grant,
        kind=kind,
        actor_type=actor_type,
        actor=actor if actor is not None and actor.is_authenticated else None,
        message=message[:500],
        detail=detail or {},
        authorization_request=authorization_request,
    )


def alert_open(
    *,
    kind: str,
    message: str,
    grant: Grant | None = None,
    app: OAuthApp | None = None,
    deliver_at=None,
) -> Alert | None:
    """Open an alert unless one of the same kind is already open for the grant (or app).

    Returns the new alert, or None when one was already open: the unique constraint makes a
    transition alert exactly once even when two workers see the same failure at the same time.
    Notices (recovered, disconnected) are closed at creation so they never block the next one.
    `deliver_at` holds delivery until then (a per-grant alert an incident alert may cover).
    """
    now = timezone.now()
    alert = Alert(
        kind=kind,
        grant=grant,
        app=app if app is not None else (grant.app if grant is not None else None),
        client=grant.client if grant is not None else None,
        message=message[:500],
        resolved_at=now if kind in Alert.NOTICE_KINDS else None,
        next_delivery_at=deliver_at or now,
    )
    try:
        with transaction.atomic():  # a savepoint: a duplicate must not break the caller's transaction
            alert.save()
    except IntegrityError:
        return None
    transaction.on_commit(lambda: _enqueue_delivery(alert.pk))
    return alert


def alerts_resolve(*, grant: Grant, kinds: list[str] | tuple[str, ...]) -> int:
    """Close the open alerts of these kinds for a grant (the problem is over)."""
    return Alert.objects.filter(grant=grant, kind__in=kinds, resolved_at__isnull=True).update(
        resolved_at=timezone.now()
    )


def _enqueue_delivery(alert_id: int) -> None:
    from ..tasks import deliver_alert_task

    try:
        deliver_alert_task.delay(alert_id)
    except Exception:  # noqa: BLE001 - a broker outage only delays delivery: the sweep finds the row
        import logging

        logging.getLogger(__name__).warning("Could not enqueue delivery of alert %s; the sweep will", alert_id)
