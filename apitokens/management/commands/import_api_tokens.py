"""`manage.py import_api_tokens FILE`: record existing API tokens from a CSV file.

Columns: client (slug), name, token, purpose (customer or internal); optional account_id,
permissions (separated by ;), notes. Valid rows are imported in one transaction; bad rows are
reported with their line and reason (never with the token). `--dry-run` only reports.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apitokens import services


class Command(BaseCommand):
    help = "Import existing Cloudflare API tokens from a CSV file (tokens are encrypted, never printed)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="CSV file, or - for standard input")
        parser.add_argument("--dry-run", action="store_true", help="Check every row, import nothing.")

    def handle(self, *args, **options) -> None:
        name = options["file"]
        if name == "-":
            text = self.stdin.read() if hasattr(self, "stdin") else __import__("sys").stdin.read()
        else:
            path = Path(name)
            if not path.is_file():
                raise CommandError(f"No such file: {name}")
            text = path.read_text(encoding="utf-8-sig")
        rows = services.csv_preview(text)
        bad = [r for r in rows if not r.ok]
        for row in bad:
            self.stderr.write(f"line {row.line}: {row.error}")
        if options["dry_run"]:
            self.stdout.write(f"{len(rows) - len(bad)} valid row(s), {len(bad)} bad row(s); nothing imported.")
            return
        created = services.csv_import(rows, created_by=None, source="import_api_tokens")
        for token in created:
            self.stdout.write(f"imported {token.client.slug} · {token.name} · {token.fingerprint_short}")
        self.stdout.write(f"{len(created)} imported, {len(bad)} bad row(s) skipped.")
        if bad and not created:
            raise CommandError("No valid rows.")
