from __future__ import annotations

from django.core.management.base import BaseCommand

from connections import crypto


class Command(BaseCommand):
    help = "Print a new key for TOKEN_ENCRYPTION_KEYS (put it first in the list to rotate)."
    # Runs before the keys are configured, so the checks that demand them must not stop it.
    requires_system_checks: list = []

    def handle(self, *args, **options) -> None:
        self.stdout.write(crypto.generate_key())
