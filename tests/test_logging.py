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
