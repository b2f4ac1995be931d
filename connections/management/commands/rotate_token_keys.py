"""Re-encrypt every stored secret under the newest key in TOKEN_ENCRYPTION_KEYS.

Rotation procedure (no downtime):
 1. Generate a key (`manage.py generate_token_key`) and put it FIRST in TOKEN_ENCRYPTION_KEYS,
    keeping the old keys after it; restart web and workers (they now encrypt with the new key and
    still decrypt with the old ones).
 2. Run this command. It walks every encrypted column in primary-key batches and rewrites only the
    values not yet under the newest key, so it is idempotent and can be stopped and run again.
 3. When it reports 0 remaining, remove the old keys from TOKEN_ENCRYPTION_KEYS.

Each row is rewritten with a compare-and-set on its old ciphertext: if a worker rotated the
refresh token meanwhile (its write is already under the new key), the command leaves it alone.
"""

from __future__ import annotations

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import F, TextField
from django.db.models.functions import Cast
from django.db.models.lookups import Exact

from connections import crypto
from connections.fields import EncryptedTextField


def encrypted_columns() -> list[tuple[type, str]]:
    return [
        (model, field.name)
        for model in apps.get_models()
        for field in model._meta.concrete_fields
        if isinstance(field, EncryptedTextField)
    ]


class Command(BaseCommand):
    help = "Re-encrypt stored tokens and client secrets under the newest TOKEN_ENCRYPTION_KEYS key."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--batch-size", type=int, default=500, help="Rows per transaction (default 500).")
        parser.add_argument(
            "--dry-run", action="store_true", help="Count the values that need re-encryption; change nothing."
        )

    def handle(self, *args, batch_size: int, dry_run: bool, **options) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        total_rewritten = total_current = 0
        for model, name in encrypted_columns():
            label = f"{model._meta.label}.{name}"
            rows = model._default_manager.exclude(**{f"{name}__isnull": True})
            raw = Cast(F(name), output_field=TextField())  # the ciphertext, not decrypted
            count = rows.count()
            self.stdout.write(f"{label}: {count} row(s)")
            done = rewritten = current = 0
            last_pk = None
            while True:
                batch = rows.order_by("pk").annotate(_raw=raw)
                if last_pk is not None:
                    batch = batch.filter(pk__gt=last_pk)
                batch = list(batch.values_list("pk", "_raw")[:batch_size])
                if not batch:
                    break
                with transaction.atomic():
                    for pk, ciphertext in batch:
                        if not ciphertext or crypto.is_current(ciphertext):
                            current += 1
                            continue
                        plaintext = crypto.decrypt(ciphertext)  # raises if no key can read it
                        if dry_run:
                            rewritten += 1
                            continue
                        # Compare-and-set on the old ciphertext: a concurrent write wins.
                        rewritten += model._default_manager.filter(Exact(raw, ciphertext), pk=pk).update(
                            **{name: plaintext}
                        )
                done += len(batch)
                last_pk = batch[-1][0]
                self.stdout.write(f"  {label}: {done}/{count} checked, {rewritten} re-encrypted")
            total_rewritten += rewritten
            total_current += current
        verb = "would be re-encrypted" if dry_run else "re-encrypted"
        self.stdout.write(
            self.style.SUCCESS(
                f"Done: {total_rewritten} value(s) {verb}, {total_current} already under the newest key."
            )
        )
