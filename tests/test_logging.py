"""The log filter masks anything shaped like a secret, as a last line of defence."""

from __future__ import annotations

import logging

from agencyportal.logging import RedactSecretsFilter, redact


def test_it_masks_cloudflare_tokens_bearer_headers_and_form_fields():
    line = (
        "sent Authorization: Bearer cfoat_AbCdEf0123456789xyz body=grant_type=refresh_token"
        "&refresh_token=cfort_ZZZZyyyy0000111122 client_secret=hunter2hunter2 code=abcdefgh12345"
    )
    cleaned = redact(line)
    for secret in ("cfoat_AbCdEf0123456789xyz", "cfort_ZZZZyyyy0000111122", "hunter2hunter2", "abcdefgh12345"):
        assert secret not in cleaned
    assert "grant_type=refresh_token" in cleaned  # not a secret, kept for diagnosis


def test_it_masks_secrets_in_log_arguments_and_tracebacks():
    record_filter = RedactSecretsFilter()
    try:
        raise ValueError("refresh failed for cfort_SECRETSECRETSECRET1234")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "token %s", ("cfoat_QWERTYUIOPASDFGH",), sys.exc_info()
        )
    assert record_filter.filter(record)
    formatted = logging.Formatter().format(record)
    assert "cfoat_QWERTYUIOPASDFGH" not in formatted
    assert "cfort_SECRETSECRETSECRET1234" not in formatted
    assert "ValueError" in formatted


def test_the_development_servers_access_log_masks_the_callbacks_code_and_state():
    import io

    # The logger and its handler are the ones settings.LOGGING configures and runserver uses.
    logger = logging.getLogger("django.server")
    (handler,) = logger.handlers
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        logger.info(
            '"%s" %s %s', "GET /oauth/cloudflare/callback/?code=shortcode&state=st4te&scope=zone.read HTTP/1.1", 302, 0
        )
    finally:
        handler.setStream(previous)
    written = stream.getvalue()
    assert "shortcode" not in written and "st4te" not in written
    assert "callback/?code=[redacted]&state=[redacted]&scope=zone.read" in written


def test_it_keeps_task_and_sign_in_bookkeeping_out_of_the_default_log():
    for name in ("celery.app.trace", "celery.worker.strategy", "celery.beat", "axes"):
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING, name
    assert logging.getLogger("connections").getEffectiveLevel() <= logging.INFO  # the engine's own lines stay


def test_the_development_email_backend_prints_a_readable_message():
    import io

    from django.core.mail import EmailMultiAlternatives

    from agencyportal.mail import ReadableConsoleBackend

    stream = io.StringIO()
    message = EmailMultiAlternatives(
        "Grant revoked: Acme Corp", "Open https://portal.example/admin/?q=é=équipe", to=["staff@agency.example"]
    )
    message.attach_alternative("<p>html</p>", "text/html")
    ReadableConsoleBackend(stream=stream).send_messages([message])
    written = stream.getvalue()
    assert "Subject: Grant revoked: Acme Corp" in written and "staff@agency.example" in written
    assert "q=é=équipe" in written and "=C3=A9" not in written and "<p>html</p>" not in written
