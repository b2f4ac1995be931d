"""Celery entry points of the migration: ids in, service call out."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from . import alerts, services
from .selectors import tokens_due_for_verify


@shared_task(ignore_result=True)
def verify_api_token_task(token_id: int) -> None:
    services.api_token_verify(token_id=token_id)


@shared_task(ignore_result=True)
def sweep_api_token_verifications_task() -> int:
    """Enqueue one verification per token due (claimed by pushing next_verify_at forward)."""
    from datetime import timedelta

    from .models import ApiToken

    now = timezone.now()
    ids = list(tokens_due_for_verify(now=now).values_list("pk", flat=True)[:500])
    # Claim: a second beat or a slow worker does not verify the same token twice in a row.
    ApiToken.objects.filter(pk__in=ids).update(next_verify_at=now + timedelta(minutes=10))
    for token_id in ids:
        verify_api_token_task.delay(token_id)
    return len(ids)


@shared_task(ignore_result=True)
def migration_sweep_task() -> dict:
    return services.migration_sweep()


@shared_task(ignore_result=True)
def deliver_token_alert_task(alert_id: int) -> None:
    alerts.token_alert_deliver(alert_id=alert_id)


@shared_task(ignore_result=True)
def sweep_token_alerts_task() -> int:
    return alerts.token_alerts_dispatch_due()


@shared_task(ignore_result=True)
def verification_run_task(app_id: int, zone_id: int, staff_id: int | None, name_confirmed: bool) -> None:
    from django.contrib.auth import get_user_model

    from clients.models import Zone
    from connections.models import OAuthApp

    from .verification import verification_run

    zone = Zone.objects.select_related("account__client").get(pk=zone_id)
    verification_run(
        app=OAuthApp.objects.get(pk=app_id),
        test_client=zone.account.client,
        test_zone=zone,
        staff=get_user_model().objects.filter(pk=staff_id).first(),
        name_confirmed=name_confirmed,
    )
