from django.db import migrations

# Agency admins manage everything here; account managers migrate their own clients' tokens (the
# admin scopes rows per manager); support reads. Service keys and verification runs: admins only.
ROLE_PERMISSIONS = {
    "Agency admin": None,  # every permission of the app
    "Account manager": [
        "add_apitoken",
        "change_apitoken",
        "view_apitoken",
        "view_apitokenevent",
        "view_tokenalert",
    ],
    "Support (read-only)": ["view_apitoken", "view_apitokenevent", "view_tokenalert", "view_verificationrun"],
}


def grant_to_roles(apps, schema_editor):
    from django.apps import apps as global_apps
    from django.contrib.auth.management import create_permissions

    create_permissions(global_apps.get_app_config("apitokens"), verbosity=0, apps=apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    every = Permission.objects.filter(content_type__app_label="apitokens")
    for name, codenames in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*(every if codenames is None else every.filter(codename__in=codenames)))


class Migration(migrations.Migration):
    dependencies = [
        ("apitokens", "0001_migration_off_api_tokens"),
        ("agencyportal", "0005_refresh_ended"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant_to_roles, migrations.RunPython.noop)]
