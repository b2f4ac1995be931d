"""Trigram indexes for the admin's searches over client, account and zone names (PostgreSQL only)."""

from django.db import migrations

# Django's icontains on PostgreSQL is UPPER(col::text) LIKE UPPER('%term%'): the index is on that
# expression, so the planner can use it.
TRIGRAM_INDEXES = (
    ("clients_client_name_trgm", "clients_client", "name"),
    ("clients_account_name_trgm", "clients_cloudflareaccount", "name"),
    ("clients_zone_name_trgm", "clients_zone", "name"),
)


def create_trigram_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return  # SQLite (development, tests) scans: its tables are small
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, table, column in TRIGRAM_INDEXES:
        schema_editor.execute(
            f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" USING gin ((UPPER("{column}"::text)) gin_trgm_ops)'
        )


def drop_trigram_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, _, _ in TRIGRAM_INDEXES:
        schema_editor.execute(f'DROP INDEX IF EXISTS "{name}"')


class Migration(migrations.Migration):
    dependencies = [
        ("clients", "0002_contact_language_time_zone"),
    ]

    operations = [
        migrations.RunPython(create_trigram_indexes, drop_trigram_indexes),
    ]
