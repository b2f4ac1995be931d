"""Run the engine's periodic sweeps once (what beat triggers every minute)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from connections.services.alerts import alerts_dispatch_due
from connections.services.health import grants_dispatch_due_checks
from connections.services.refresh import grants_dispatch_due_refreshes


class Command(BaseCommand):
    help = "Enqueue due refreshes, health checks and alert deliveries once (a manual beat tick)."

    def handle(self, *args, **options):
        self.stdout.write(f"refreshes enqueued: {grants_dispatch_due_refreshes()}")
        self.stdout.write(f"checks enqueued: {grants_dispatch_due_checks()}")
        self.stdout.write(f"alert deliveries enqueued: {alerts_dispatch_due()}")
