"""Delivery of token alerts to staff: the same email templates and signed webhook as grant alerts
(`connections.services.alerts`), so receivers see one format."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from connections.services import alerts as grant_alerts

from .models import TokenAlert

logger = logging.getLogger(__name__)
MAX_ATTEMPTS_WINDOW = timedelta(days=1)


def _context(alert: TokenAlert) -> dict:
    return {
        "alert": alert,
        "kind_label": alert.get_kind_display(),
        "grant": None,
        "client": alert.client,
        "app": None,
        "admin_url": settings.SITE_URL + reverse("admin:apitokens_apitoken_change", args=[alert.token_id]),
        "site_name": settings.SITE_NAME,
    }


def token_alert_deliver(*, alert_id: int) -> None:
    alert = (
        TokenAlert.objects.filter(pk=alert_id, delivered_at__isnull=True)
        .select_related("client__account_manager", "token")
        .first()
    )
    if alert is None:
        return
    context = _context(alert)
    errors: list[str] = []
    done = {TokenAlert.Delivery.SENT, TokenAlert.Delivery.SKIPPED}
    email, webhook = alert.email_status, alert.webhook_status
    if email not in done:
        email = grant_alerts._send_email(alert, context, errors)
    if webhook not in done:
        webhook = grant_alerts._send_webhook(alert, context, errors)
    updates = {"email_status": email, "webhook_status": webhook, "last_delivery_error": "; ".join(errors)[:500]}
    if email in done and webhook in done:
        updates["delivered_at"] = timezone.now()
    # Claimed by the delivered_at guard: a duplicate message finds the row delivered and stops.
    TokenAlert.objects.filter(pk=alert_id, delivered_at__isnull=True).update(**updates)
    logger.info("token alert delivery: alert=%s kind=%s email=%s webhook=%s", alert_id, alert.kind, email, webhook)


def token_alerts_dispatch_due() -> int:
    from .tasks import deliver_token_alert_task

    since = timezone.now() - MAX_ATTEMPTS_WINDOW
    ids = list(
        TokenAlert.objects.filter(delivered_at__isnull=True, created_at__gte=since).values_list("pk", flat=True)[:200]
    )
    for alert_id in ids:
        deliver_token_alert_task.delay(alert_id)
    return len(ids)
