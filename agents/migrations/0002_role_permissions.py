from django.db import migrations

# Agency admins see and revoke every agent connection; account managers see and revoke their own
# (the admin filters the rows); support sees them all and revokes none.
ROLE_PERMISSIONS = {
    "Agency admin": ["view_agentconnection", "change_agentconnection"],
    "Account manager": ["view_agentconnection"],
    "Support (read-only)": ["view_agentconnection"],
}


def grant_to_roles(apps, schema_editor):
    from django.apps import apps as global_apps
    from django.contrib.auth.management import create_permissions

    create_permissions(global_apps.get_app_config("agents"), verbosity=0, apps=apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    every = Permission.objects.filter(content_type__app_label="agents")
    for name, codenames in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*every.filter(codename__in=codenames))


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0001_initial"),
        ("agencyportal", "0005_refresh_ended"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant_to_roles, migrations.RunPython.noop)]
