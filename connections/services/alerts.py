"""Delivery of alerts to staff (email and a signed webhook).

An `Alert` row is the outbox: it is written in the same transaction as the state change, and this
module delivers it afterwards, outside any transaction (an SMTP or webhook call must never hold
database locks, and must never happen for a change that rolled back).

Channels:

- **email** to `STAFF_ALERT_EMAILS` plus the client's account manager, rendered from
  `templates/emails/alert_subject.txt`, `alert_body.txt`, `alert_body.html`;
- **webhook** POST to `ALERT_WEBHOOK_URL` with Slack-compatible JSON (`text` + `blocks`), signed
  with `ALERT_WEBHOOK_SECRET`: header `X-Agency-Portal-Signature: sha256=<hex HMAC-SHA256 of
  "<timestamp>.<body>">` and `X-Agency-Portal-Timestamp: <unix seconds>` (the receiver rejects
  old timestamps, so a captured request cannot be replayed later).

A channel that is not configured is recorded as *skipped*. A failed channel is retried with
exponential backoff (`next_delivery_at`) up to `ALERT_DELIVERY_MAX_ATTEMPTS`; a channel that already
succeeded is never sent twice.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import time
from datetime import timedelta

import requests
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db.models import F
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from ..models import Alert
from ..selectors import alert_for_delivery, alerts_due_for_delivery

logger = logging.getLogger(__name__)

# While one worker delivers an alert, the row is hidden from the sweep for this long.
DELIVERY_CLAIM = timedelta(minutes=5)
SIGNATURE_HEADER = "X-Agency-Portal-Signature"
TIMESTAMP_HEADER = "X-Agency-Portal-Timestamp"
EMOJI = {
    "revoked": ":red_circle:",
    "lost": ":red_circle:",
    "refresh_failing": ":warning:",
    "scope_missing": ":warning:",
    "health_failing": ":warning:",
    "client_config": ":rotating_light:",
    "incident": ":rotating_light:",
    "recovered": ":large_green_circle:",
    "disconnected": ":white_circle:",
}


def alert_deliver(*, alert_id: int) -> None:
    """Deliver one alert on every channel not yet done. Safe to call twice (claimed first)."""
    now = timezone.now()
    # Claim: a duplicate message (sweep + on_commit, a redelivery) must not send twice.
    claimed = Alert.objects.filter(
        pk=alert_id,
        delivered_at__isnull=True,
        next_delivery_at__lte=now,
        delivery_attempts__lt=settings.ALERT_DELIVERY_MAX_ATTEMPTS,
    ).update(next_delivery_at=now + DELIVERY_CLAIM, delivery_attempts=F("delivery_attempts") + 1)
    if claimed != 1:
        return
    alert = alert_for_delivery(alert_id=alert_id)
    held = _held_reason(alert)
    if held:
        # Staff hear of this failure once, through the incident (or not at all: it is over).
        Alert.objects.filter(pk=alert_id).update(
            email_status=Alert.Delivery.SKIPPED,
            webhook_status=Alert.Delivery.SKIPPED,
            delivered_at=timezone.now(),
            next_delivery_at=None,
            resolved_at=alert.resolved_at or timezone.now(),
            last_delivery_error=held[:500],
        )
        logger.info("alert delivery: alert=%s kind=%s outcome=held", alert_id, alert.kind)
        return
    context = _context(alert)
    errors: list[str] = []
    email_status, webhook_status = alert.email_status, alert.webhook_status
    if email_status in (Alert.Delivery.PENDING, Alert.Delivery.FAILED):
        email_status = _send_email(alert, context, errors)
    if webhook_status in (Alert.Delivery.PENDING, Alert.Delivery.FAILED):
        webhook_status = _send_webhook(alert, context, errors)

    done = {Alert.Delivery.SENT, Alert.Delivery.SKIPPED}
    updates: dict = {"email_status": email_status, "webhook_status": webhook_status}
    if email_status in done and webhook_status in done:
        updates.update(delivered_at=timezone.now(), next_delivery_at=None, last_delivery_error="; ".join(errors)[:500])
        outcome = "delivered"
    elif alert.delivery_attempts >= settings.ALERT_DELIVERY_MAX_ATTEMPTS:
        # Give up: the row stays undelivered (visible in the admin) but leaves the queue.
        updates.update(next_delivery_at=None, last_delivery_error="; ".join(errors)[:500])
        outcome = "gave_up"
    else:
        delay = min(60 * 2 ** (alert.delivery_attempts - 1), 6 * 3600)
        delay = delay / 2 + random.uniform(0, delay / 2)
        updates.update(
            next_delivery_at=timezone.now() + timedelta(seconds=delay), last_delivery_error="; ".join(errors)[:500]
        )
        outcome = "retry"
    Alert.objects.filter(pk=alert_id).update(**updates)
    logger.info(
        "alert delivery: alert=%s kind=%s email=%s webhook=%s outcome=%s",
        alert_id,
        alert.kind,
        email_status,
        webhook_status,
        outcome,
    )


def _held_reason(alert: Alert) -> str:
    """Why a held per-grant "refresh failing" alert is not sent, or "" to send it."""
    if alert.kind != Alert.Kind.REFRESH_FAILING or alert.grant_id is None:
        return ""
    if alert.resolved_at is not None:
        return "Not sent: the grant recovered before the alert was due."
    incident = (
        Alert.objects.filter(app_id=alert.app_id, grant__isnull=True, kind=Alert.Kind.INCIDENT)
        .filter(created_at__gte=alert.created_at - timedelta(seconds=settings.GRANT_INCIDENT_WINDOW))
        .order_by("-created_at")
        .values_list("pk", flat=True)
        .first()
    )
    return f"Not sent: covered by incident alert #{incident}." if incident else ""


# --- Incidents: one alert per outage, not per grant ---------------------------------------------


def incident_note(*, app, now, error: str) -> Alert | None:
    """Called when a grant's refresh fails (first failure of a streak, or the threshold).

    Returns the app's open incident alert when one covers this failure (opening it when at least
    `GRANT_INCIDENT_MIN_GRANTS` grants of the app began failing within `GRANT_INCIDENT_WINDOW`
    seconds), or None when the grant fails alone (its own alert then goes out).
    """
    from ..models import Grant
    from ..selectors import REFRESHABLE_STATUSES
    from .events import alert_open

    open_incident = Alert.objects.filter(
        app=app, grant__isnull=True, kind=Alert.Kind.INCIDENT, resolved_at__isnull=True
    ).first()
    if open_incident is not None:
        return open_incident
    failing = Grant.objects.filter(
        app=app,
        status__in=REFRESHABLE_STATUSES,
        consecutive_failures__gt=0,
        refresh_failing_since__gte=now - timedelta(seconds=settings.GRANT_INCIDENT_WINDOW),
    )
    count = failing.count()
    if count < settings.GRANT_INCIDENT_MIN_GRANTS:
        return None
    since = failing.order_by("refresh_failing_since").values_list("refresh_failing_since", flat=True).first()
    alert = alert_open(
        kind=Alert.Kind.INCIDENT,
        app=app,
        message=f"Token refreshes failing for {count} grants of OAuth app “{app.name}” since "
        f"{timezone.localtime(since):%Y-%m-%d %H:%M:%S %Z}: {error[:150]}. Per-grant alerts are held; "
        "one notice follows when refreshes work again.",
    )
    return (
        alert
        or Alert.objects.filter(app=app, grant__isnull=True, kind=Alert.Kind.INCIDENT, resolved_at__isnull=True).first()
    )


def incident_recovered_if_over(*, app, now) -> bool:
    """After a grant of `app` recovered: close the app's incident once no grant is failing any more."""
    from ..models import Grant, GrantEvent
    from ..selectors import REFRESHABLE_STATUSES
    from .events import alert_open

    incident = Alert.objects.filter(
        app=app, grant__isnull=True, kind=Alert.Kind.INCIDENT, resolved_at__isnull=True
    ).first()
    if incident is None:
        return False
    if Grant.objects.filter(app=app, status__in=REFRESHABLE_STATUSES, consecutive_failures__gt=0).exists():
        return False
    if not Alert.objects.filter(pk=incident.pk, resolved_at__isnull=True).update(resolved_at=now):
        return False  # another worker closed it
    affected = (
        GrantEvent.objects.filter(
            grant__app=app,
            kind__in=[GrantEvent.Kind.REFRESH_FAILED, GrantEvent.Kind.REFRESH_UNCERTAIN],
            at__gte=incident.created_at - timedelta(seconds=settings.GRANT_INCIDENT_WINDOW),
        )
        .values("grant")
        .distinct()
        .count()
    )
    minutes = max(1, round((now - incident.created_at).total_seconds() / 60))
    alert_open(
        kind=Alert.Kind.RECOVERED,
        app=app,
        message=f"Token refreshes of OAuth app “{app.name}” work again: incident #{incident.pk} is over after "
        f"about {minutes} min; {affected} grants were affected.",
    )
    return True


def alerts_dispatch_due(*, now=None, limit: int = 500) -> int:
    """Enqueue delivery of alerts that are due (a lost on-commit message, a scheduled retry)."""
    from ..tasks import deliver_alert_task
    from .dispatch import enqueue_each

    ids = list(alerts_due_for_delivery(now=now or timezone.now()).values_list("pk", flat=True)[:limit])
    enqueue_each(deliver_alert_task, ids)
    return len(ids)


def _context(alert: Alert) -> dict:
    grant = alert.grant
    client = alert.client or (grant.client if grant else None)
    admin_url = ""
    try:
        if grant is not None:
            admin_url = settings.SITE_URL + reverse("admin:connections_grant_change", args=[grant.pk])
        elif alert.app is not None:
            admin_url = settings.SITE_URL + reverse("admin:connections_oauthapp_change", args=[alert.app.pk])
    except NoReverseMatch:
        admin_url = settings.SITE_URL + "/admin/"
    return {
        "alert": alert,
        "kind_label": alert.get_kind_display(),
        "grant": grant,
        "client": client,
        "app": alert.app,
        "admin_url": admin_url,
        "site_name": settings.SITE_NAME,
    }


def _recipients(alert: Alert, context: dict) -> list[str]:
    recipients = list(settings.STAFF_ALERT_EMAILS)
    client = context["client"]
    manager = client.account_manager if client is not None else None
    if manager is not None and manager.email:
        recipients.append(manager.email)
    return list(dict.fromkeys(r for r in recipients if r))


def _send_email(alert: Alert, context: dict, errors: list[str]) -> str:
    recipients = _recipients(alert, context)
    if not recipients:
        return Alert.Delivery.SKIPPED
    subject = " ".join(render_to_string("emails/alert_subject.txt", context).split())
    text = render_to_string("emails/alert_body.txt", context)
    html = render_to_string("emails/alert_body.html", context)
    message = EmailMultiAlternatives(subject=subject, body=text, to=recipients)
    message.attach_alternative(html, "text/html")
    try:
        message.send(fail_silently=False)
    except Exception as exc:  # noqa: BLE001 - SMTP errors of every kind: recorded, retried
        errors.append(f"email: {type(exc).__name__}")
        return Alert.Delivery.FAILED
    return Alert.Delivery.SENT


def slack_escape(text: object) -> str:
    """Text as Slack shows it literally: `&`, `<` and `>` escaped (Slack's own rule for message text).

    Without it a Cloudflare account name or a callback's `error_description` such as
    `<https://evil.example|Open the fix page>` would become a live link in the staff alert. Every
    value from outside goes through here; only the admin link we build ourselves is markup.
    """
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_payload(alert: Alert, context: dict) -> dict:
    """Slack-compatible JSON: `text` for every receiver, `blocks` for Slack's richer layout."""
    client = context["client"]
    grant = context["grant"]
    title = slack_escape(f"{EMOJI.get(alert.kind, '')} {context['kind_label']}".strip())
    message = slack_escape(alert.message)
    text = f"{title}: {message}"
    fields = []
    if client is not None:
        fields.append({"type": "mrkdwn", "text": f"*Client*\n{slack_escape(client.name)}"})
    if grant is not None:
        who = slack_escape(grant.cf_user_email or grant.cf_user_id)
        fields.append({"type": "mrkdwn", "text": f"*Cloudflare user*\n{who}"})
        fields.append({"type": "mrkdwn", "text": f"*Grant status*\n{slack_escape(grant.get_status_display())}"})
    if context["app"] is not None:
        fields.append({"type": "mrkdwn", "text": f"*OAuth app*\n{slack_escape(context['app'].name)}"})
    blocks: list[dict] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*\n{message}"}},
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    if context["admin_url"]:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{context['admin_url']}|Open in admin>"}]}
        )
    return {
        "text": text,
        "blocks": blocks,
        "alert": {
            "id": alert.pk,
            "kind": alert.kind,
            "grant": str(grant.code) if grant is not None else None,
            "client": client.slug if client is not None else None,
            "created_at": alert.created_at.isoformat(),
        },
    }


def sign(*, secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>")."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _send_webhook(alert: Alert, context: dict, errors: list[str]) -> str:
    url = settings.ALERT_WEBHOOK_URL
    if not url:
        return Alert.Delivery.SKIPPED
    if not settings.ALERT_WEBHOOK_SECRET:
        # Never send unsigned: a receiver could not tell our alerts from forged ones.
        errors.append("webhook: ALERT_WEBHOOK_SECRET is not set; not sent")
        return Alert.Delivery.SKIPPED
    body = json.dumps(webhook_payload(alert, context), separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "agency-portal/1.0",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret=settings.ALERT_WEBHOOK_SECRET, timestamp=timestamp, body=body),
    }
    try:
        response = requests.post(
            url, data=body, headers=headers, timeout=(5.0, settings.ALERT_WEBHOOK_TIMEOUT), allow_redirects=False
        )
    except requests.RequestException as exc:
        errors.append(f"webhook: {type(exc).__name__}")
        return Alert.Delivery.FAILED
    if 200 <= response.status_code < 300:
        return Alert.Delivery.SENT
    # The URL may carry a secret path (Slack incoming webhooks do): never log or store it.
    errors.append(f"webhook: HTTP {response.status_code}")
    return Alert.Delivery.FAILED
