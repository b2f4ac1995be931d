"""The admin's grant list at 100,000 grants: a counter for "accounts reached", indexes for the
status and health filters, and trigram indexes for the searched text columns (PostgreSQL only)."""

from django.db import migrations, models

# Django's icontains on PostgreSQL is UPPER(col::text) LIKE UPPER('%term%'): the index is on that
# expression, so the planner can use it for the admin's searches.
TRIGRAM_INDEXES = (
    ("connections_grant_email_trgm", "connections_grant", "cf_user_email"),
    ("connections_event_message_trgm", "connections_grantevent", "message"),
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
        ("connections", "0006_refresh_failing_since_and_incident_alerts"),
    ]

    operations = [
        migrations.AddField(
            model_name="grant",
            name="accounts_count",
            field=models.PositiveIntegerField(default=0, editable=False),
        ),
        migrations.RunSQL(
            "UPDATE connections_grant SET accounts_count = "
            "(SELECT COUNT(*) FROM connections_grant_accounts a WHERE a.grant_id = connections_grant.id)",
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.AddIndex(
            model_name="grant",
            index=models.Index(fields=["status", "-authorized_at"], name="connections_grant_status_auth"),
        ),
        migrations.AddIndex(
            model_name="grant",
            index=models.Index(fields=["health", "status"], name="connections_grant_health_st"),
        ),
        migrations.AddIndex(
            model_name="grant",
            index=models.Index(fields=["accounts_count", "id"], name="connections_grant_accounts_n"),
        ),
        migrations.AddIndex(
            model_name="grant",
            index=models.Index(fields=["cf_user_email", "id"], name="connections_grant_email"),
        ),
        migrations.RunPython(create_trigram_indexes, drop_trigram_indexes),
    ]
