"""Run one grant's health check now."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from connections.services.health import grant_check


class Command(BaseCommand):
    help = "Run the health check of one or more grants now (accounts, zones, scopes, revocation)."

    def add_arguments(self, parser):
        parser.add_argument("grant_id", type=int, nargs="+")

    def handle(self, *args, **options):
        for grant_id in options["grant_id"]:
            outcome = grant_check(grant_id=grant_id, force=True)
            self.stdout.write(f"grant {grant_id}: {outcome.value}")
