"""Alert delivery: email to staff, a signed Slack-compatible webhook, retries, exactly-once sending.

The webhook receiver is a real local HTTP server (not a mock), so headers and bodies are what a
receiver would see.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.utils import timezone

from connections.models import Alert
from connections.services.alerts import alert_deliver, alerts_dispatch_due, sign
from tests import factories


class _Receiver(BaseHTTPRequestHandler):
    status = 200
    received: list = []

    def do_POST(self):  # noqa: N802
        length = int(self.headers["Content-Length"])
        type(self).received.append((dict(self.headers), self.rfile.read(length)))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook(settings):
    _Receiver.received = []
    _Receiver.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.ALERT_WEBHOOK_URL = f"http://127.0.0.1:{server.server_port}/hooks/secret-path"
    settings.ALERT_WEBHOOK_SECRET = "webhook-signing-secret"
    yield _Receiver
    server.shutdown()
    server.server_close()


@pytest.fixture
def staff_emails(settings):
    settings.STAFF_ALERT_EMAILS = ["ops@agency.example"]


@pytest.fixture
def revoked_alert(acme):
    manager = factories.StaffFactory(username="manager", email="manager@agency.example")
    acme.account_manager = manager
    acme.save()
    grant = factories.GrantFactory(client=acme, cf_user_email="owner@acme.example")
    return factories.AlertFactory(
        grant=grant, kind=Alert.Kind.REVOKED, message="Acme Corp / owner@acme.example: grant revoked"
    )


def test_it_emails_staff_and_the_account_manager(revoked_alert, staff_emails):
    alert_deliver(alert_id=revoked_alert.pk)

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert sorted(message.to) == ["manager@agency.example", "ops@agency.example"]
    assert "Grant revoked" in message.subject and "Acme Corp" in message.subject
    assert "owner@acme.example" in message.body
    assert "consent link" in message.body
    assert message.alternatives and "<h2" in message.alternatives[0][0]
    revoked_alert.refresh_from_db()
    assert revoked_alert.email_status == Alert.Delivery.SENT


def test_it_posts_a_signed_slack_compatible_webhook(revoked_alert, webhook):
    alert_deliver(alert_id=revoked_alert.pk)

    assert len(webhook.received) == 1
    headers, body = webhook.received[0]
    payload = json.loads(body)
    assert payload["text"].startswith(":red_circle: Grant revoked")
    assert payload["blocks"][0]["type"] == "section"
    assert payload["alert"]["kind"] == "revoked"
    timestamp = headers["X-Agency-Portal-Timestamp"]
    expected = hmac.new(b"webhook-signing-secret", timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-Agency-Portal-Signature"] == f"sha256={expected}"
    assert headers["Content-Type"] == "application/json"
    assert sign(secret="webhook-signing-secret", timestamp=timestamp, body=body) == f"sha256={expected}"


def test_it_marks_the_alert_delivered_when_every_channel_is_done(revoked_alert, webhook, staff_emails):
    alert_deliver(alert_id=revoked_alert.pk)

    revoked_alert.refresh_from_db()
    assert revoked_alert.email_status == Alert.Delivery.SENT
    assert revoked_alert.webhook_status == Alert.Delivery.SENT
    assert revoked_alert.delivered_at is not None and revoked_alert.next_delivery_at is None
    assert revoked_alert.delivery_attempts == 1


def test_it_skips_channels_that_are_not_configured(acme, settings):
    settings.STAFF_ALERT_EMAILS, settings.ALERT_WEBHOOK_URL = [], ""
    alert = factories.AlertFactory(grant=factories.GrantFactory(client=acme))

    alert_deliver(alert_id=alert.pk)

    alert.refresh_from_db()
    assert (alert.email_status, alert.webhook_status) == (Alert.Delivery.SKIPPED, Alert.Delivery.SKIPPED)
    assert alert.delivered_at is not None
    assert mail.outbox == []


def test_it_retries_a_failed_webhook_with_backoff_without_resending_the_email(revoked_alert, webhook, staff_emails):
    webhook.status = 503

    alert_deliver(alert_id=revoked_alert.pk)

    revoked_alert.refresh_from_db()
    assert revoked_alert.email_status == Alert.Delivery.SENT
    assert revoked_alert.webhook_status == Alert.Delivery.FAILED
    assert revoked_alert.delivered_at is None
    assert revoked_alert.last_delivery_error == "webhook: HTTP 503"
    assert "secret-path" not in revoked_alert.last_delivery_error
    assert timezone.now() + timedelta(seconds=25) <= revoked_alert.next_delivery_at

    webhook.status = 200
    Alert.objects.filter(pk=revoked_alert.pk).update(next_delivery_at=timezone.now())
    alert_deliver(alert_id=revoked_alert.pk)

    revoked_alert.refresh_from_db()
    assert revoked_alert.webhook_status == Alert.Delivery.SENT and revoked_alert.delivered_at is not None
    assert len(mail.outbox) == 1  # the email went once
    assert len(webhook.received) == 2


def test_it_gives_up_after_the_last_attempt(revoked_alert, webhook, settings):
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 2
    webhook.status = 500
    for _ in range(3):
        Alert.objects.filter(pk=revoked_alert.pk, next_delivery_at__isnull=False).update(
            next_delivery_at=timezone.now()
        )
        alert_deliver(alert_id=revoked_alert.pk)

    revoked_alert.refresh_from_db()
    assert revoked_alert.delivery_attempts == 2
    assert revoked_alert.next_delivery_at is None and revoked_alert.delivered_at is None
    assert revoked_alert.webhook_status == Alert.Delivery.FAILED


def test_it_sends_once_when_the_delivery_task_runs_twice(revoked_alert, webhook, staff_emails):
    alert_deliver(alert_id=revoked_alert.pk)
    alert_deliver(alert_id=revoked_alert.pk)

    assert len(mail.outbox) == 1 and len(webhook.received) == 1


def test_it_re_enqueues_due_undelivered_alerts(revoked_alert):
    from unittest.mock import patch

    factories.AlertFactory(grant=factories.GrantFactory(), kind="lost", delivered_at=timezone.now())
    with patch("connections.tasks.deliver_alert_task.delay") as delay:
        assert alerts_dispatch_due() == 1
    delay.assert_called_once_with(revoked_alert.pk)


def test_it_delivers_an_app_wide_alert(oauth_app, staff_emails, webhook):
    alert = Alert.objects.create(kind="client_config", app=oauth_app, message="Cloudflare refused the credentials")

    alert_deliver(alert_id=alert.pk)

    assert "OAuth app configuration" in mail.outbox[0].subject
    assert json.loads(webhook.received[0][1])["alert"]["grant"] is None


def test_it_opens_a_transition_alert_once_and_enqueues_delivery_after_commit(acme, django_capture_on_commit_callbacks):
    from unittest.mock import patch

    from connections.services.events import alert_open

    grant = factories.GrantFactory(client=acme)
    with patch("connections.tasks.deliver_alert_task.delay") as delay:
        with django_capture_on_commit_callbacks(execute=True):
            first = alert_open(kind="revoked", grant=grant, message="revoked")
            second = alert_open(kind="revoked", grant=grant, message="revoked")
    assert first is not None and second is None
    delay.assert_called_once_with(first.pk)


def test_it_never_sends_an_unsigned_webhook(revoked_alert, webhook, settings):
    settings.ALERT_WEBHOOK_SECRET = ""

    alert_deliver(alert_id=revoked_alert.pk)

    assert webhook.received == []
    revoked_alert.refresh_from_db()
    assert revoked_alert.webhook_status == Alert.Delivery.SKIPPED
    assert "ALERT_WEBHOOK_SECRET" in revoked_alert.last_delivery_error


def test_it_escapes_slack_markup_in_every_text_of_the_webhook(acme, webhook):
    # A Cloudflare account name or a callback's error text must never become a live Slack link.
    hostile = "<https://evil.example|Open the fix page> & <!channel>"
    acme.name = f"Acme {hostile}"
    acme.save()
    grant = factories.GrantFactory(client=acme, cf_user_email="x@acme.example")
    alert = factories.AlertFactory(grant=grant, kind=Alert.Kind.REVOKED, message=f"Account {hostile} revoked")

    alert_deliver(alert_id=alert.pk)

    payload = json.loads(webhook.received[0][1])
    texts = [payload["text"]]
    for block in payload["blocks"]:
        if "text" in block:
            texts.append(block["text"]["text"])
        texts += [f["text"] for f in block.get("fields", [])]
        texts += [e["text"] for e in block.get("elements", []) if "Open in admin" not in e["text"]]
    joined = "\n".join(texts)
    assert "<https://evil.example" not in joined and "<!channel>" not in joined
    assert "&lt;https://evil.example|Open the fix page&gt; &amp; &lt;!channel&gt;" in joined
    # The one link the portal writes itself stays a link.
    assert any("|Open in admin>" in e["text"] for b in payload["blocks"] for e in b.get("elements", []))
