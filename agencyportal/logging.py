"""Defence in depth for secrets in logs.

Code never logs tokens on purpose; this filter catches the accident (an exception message that
quotes a request body, a library that logs a header) by masking anything shaped like a Cloudflare
token, a bearer credential or an OAuth form field before the record is written.
"""

from __future__ import annotations

import logging
import re

_PATTERNS = [
    # Cloudflare OAuth access tokens, our sandbox's refresh tokens, user / account API tokens.
    re.compile(r"\b(cfoat|cfort|cfut|cfat)_[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}"),
    re.compile(
        r"(?i)\b(access_token|refresh_token|client_secret|code_verifier|code|token|password)"
        r"([\"']?\s*[=:]\s*[\"']?)[^\s&\"',}]{6,}"
    ),
    # Query strings (an access log line of the OAuth callback): `code`, `state` and the error text, any length.
    re.compile(r"([?&](?:code|state|error_description)=)[^&\s\"']+"),
]


def redact(text: str) -> str:
    text = _PATTERNS[0].sub(lambda m: f"{m.group(1)}_[redacted]", text)
    text = _PATTERNS[1].sub(lambda m: f"{m.group(1)} [redacted]", text)
    text = _PATTERNS[2].sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)
    return _PATTERNS[3].sub(lambda m: f"{m.group(1)}[redacted]", text)


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            # Format the traceback now, redacted, so the handler does not re-render the raw one.
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(formatted)
            record.exc_info = None
        return True
