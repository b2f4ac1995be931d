"""Celery entry points: ids in, a service call out. Classification lives in the services."""

from __future__ import annotations

from celery import shared_task


@shared_task(ignore_result=True)
def deliver_alert_task(alert_id: int) -> None:
    from .services.alerts import alert_deliver

    alert_deliver(alert_id=alert_id)
