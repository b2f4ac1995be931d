"""The admin's grant list at 100,000 grants: a counter for "accounts reached", a "scope missing"
flag kept by triggers, indexes for the filters and sorts, and trigram indexes for the searched
text columns (PostgreSQL only)."""

from django.db import migrations, models

# Django's icontains on PostgreSQL is UPPER(col::text) LIKE UPPER('%term%'): the index is on that
# expression, so the planner can use it for the admin's searches.
TRIGRAM_INDEXES = (
    ("connections_grant_email_trgm", "connections_grant", "cf_user_email"),
    ("connections_event_message_trgm", "connections_grantevent", "message"),
)


# scope_missing = the grant's granted_scopes lacks one of its app's required_scopes. Triggers keep
# it, so every writer (consent, refresh, token spool, a shell) leaves it right:
# - a grant inserted, or its scopes or app changed: recomputed for that row;
# - an app's required scopes changed: recomputed for the app's grants.
POSTGRES_TRIGGERS = """
CREATE FUNCTION connections_grant_scope_missing_set() RETURNS trigger AS $$
BEGIN
    NEW.scope_missing := EXISTS (
        SELECT 1 FROM connections_oauthapp a, jsonb_array_elements_text(a.required_scopes) r(scope)
        WHERE a.id = NEW.app_id AND NOT (NEW.granted_scopes ? r.scope)
    );
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER connections_grant_scope_missing BEFORE INSERT OR UPDATE OF granted_scopes, app_id
    ON connections_grant FOR EACH ROW EXECUTE FUNCTION connections_grant_scope_missing_set();
CREATE FUNCTION connections_oauthapp_scope_missing_set() RETURNS trigger AS $$
BEGIN
    UPDATE connections_grant SET granted_scopes = granted_scopes WHERE app_id = NEW.id;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER connections_oauthapp_scope_missing AFTER UPDATE OF required_scopes
    ON connections_oauthapp FOR EACH ROW WHEN (OLD.required_scopes IS DISTINCT FROM NEW.required_scopes)
    EXECUTE FUNCTION connections_oauthapp_scope_missing_set();
"""
POSTGRES_TRIGGERS_DROP = """
DROP TRIGGER IF EXISTS connections_oauthapp_scope_missing ON connections_oauthapp;
DROP FUNCTION IF EXISTS connections_oauthapp_scope_missing_set();
DROP TRIGGER IF EXISTS connections_grant_scope_missing ON connections_grant;
DROP FUNCTION IF EXISTS connections_grant_scope_missing_set();
"""
SQLITE_MISSING = """EXISTS (
    SELECT 1 FROM connections_oauthapp a, json_each(a.required_scopes) r
    WHERE a.id = NEW.app_id
      AND NOT EXISTS (SELECT 1 FROM json_each(NEW.granted_scopes) g WHERE g.value = r.value)
)"""
SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER connections_grant_scope_missing_insert AFTER INSERT ON connections_grant
    BEGIN UPDATE connections_grant SET scope_missing = {SQLITE_MISSING} WHERE id = NEW.id; END""",
    f"""CREATE TRIGGER connections_grant_scope_missing_update AFTER UPDATE OF granted_scopes, app_id
    ON connections_grant
    BEGIN UPDATE connections_grant SET scope_missing = {SQLITE_MISSING} WHERE id = NEW.id; END""",
    """CREATE TRIGGER connections_oauthapp_scope_missing AFTER UPDATE OF required_scopes ON connections_oauthapp
    WHEN OLD.required_scopes IS NOT NEW.required_scopes
    BEGIN UPDATE connections_grant SET granted_scopes = granted_scopes WHERE app_id = NEW.id; END""",
]
SQLITE_TRIGGER_NAMES = [
    "connections_grant_scope_missing_insert",
    "connections_grant_scope_missing_update",
    "connections_oauthapp_scope_missing",
]


def create_scope_missing_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_TRIGGERS)
    elif vendor == "sqlite":
        for sql in SQLITE_TRIGGERS:
            schema_editor.execute(sql)
    else:
        return
    # Existing rows: the update trigger computes the flag.
    schema_editor.execute("UPDATE connections_grant SET granted_scopes = granted_scopes")


def drop_scope_missing_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_TRIGGERS_DROP)
    elif vendor == "sqlite":
        for name in SQLITE_TRIGGER_NAMES:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")


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

    # Data updates last: PostgreSQL refuses CREATE INDEX on a table with pending trigger events.
    operations = [
        migrations.AddField(
            model_name="grant",
            name="accounts_count",
            field=models.PositiveIntegerField(default=0, editable=False),
        ),
        migrations.AddField(
            model_name="grant",
            name="scope_missing",
            field=models.BooleanField(default=False, editable=False),
        ),
        migrations.AddIndex(
            model_name="grant",
            index=models.Index(
                condition=models.Q(("scope_missing", True)), fields=["-authorized_at"], name="connections_grant_missing"
            ),
        ),
        migrations.AddIndex(
            model_name="grant",
            index=models.Index(
                condition=models.Q(("declined_scopes", []), _negated=True),
                fields=["-authorized_at"],
                name="connections_grant_partial",
            ),
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
        migrations.AddIndex(
            model_name="grant",
            index=models.Index(
                condition=models.Q(("status", "active"), models.Q(("declined_scopes", []), _negated=True)),
                fields=["client"],
                name="connections_grant_declined",
            ),
        ),
        migrations.RunPython(create_trigram_indexes, drop_trigram_indexes),
        migrations.RunPython(create_scope_missing_triggers, drop_scope_missing_triggers),
        migrations.RunSQL(
            "UPDATE connections_grant SET accounts_count = "
            "(SELECT COUNT(*) FROM connections_grant_accounts a WHERE a.grant_id = connections_grant.id)",
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
