"""Refresh one grant now, through the same single-flight path as the workers."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from connections.services.refresh import grant_refresh


class Command(BaseCommand):
    help = "Refresh a grant's tokens now (single-flight: prints 'skipped' if a worker holds it)."

    def add_arguments(self, parser):
        parser.add_argument("grant_id", type=int, nargs="+")
        parser.add_argument("--if-due", action="store_true", help="Only if the token is in its refresh window.")

    def handle(self, *args, **options):
        for grant_id in options["grant_id"]:
            outcome = grant_refresh(grant_id=grant_id, force=not options["if_due"])
            self.stdout.write(f"grant {grant_id}: {outcome.value}")
