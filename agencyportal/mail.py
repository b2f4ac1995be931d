"""Development email: readable on the console.

Django's console backend prints the raw MIME message (quoted-printable bodies, an HTML part), which
in a worker's log is unreadable. This one prints who, what and the plain-text body, decoded, so an
invitation link or an alert reads as written. Production uses SMTP (`EMAIL_URL`).
"""

from __future__ import annotations

from django.core.mail.backends.console import EmailBackend


class ReadableConsoleBackend(EmailBackend):
    def write_message(self, message) -> None:
        self.stream.write(
            f"Email to {', '.join(message.to)} from {message.from_email}\n"
            f"Subject: {message.subject}\n\n{message.body.rstrip()}\n{'-' * 79}\n"
        )
