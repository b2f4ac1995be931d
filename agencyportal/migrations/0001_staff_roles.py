"""Create the staff role groups with their permissions."""

from __future__ import annotations

from django.db import migrations

ROLES = {
    # No otp_totp permissions: staff manage only their own authenticator (0004 removes them where granted).
    "Agency admin": {"clients": "all", "connections": "all", "axes": "all", "auth": ["view_user"]},
    "Account manager": {
        "clients": ["view_client", "change_client", "view_clientmember", "add_clientmember", "change_clientmember",
                    "view_cloudflareaccount", "view_zone"],
        "connections": ["view_oauthapp", "view_authorizationrequest", "view_grant", "change_grant",
                        "view_grantevent", "view_alert", "change_alert"],
    },
    "Support (read-only)": {"clients": "view", "connections": "view"},
}


def create_roles(apps, schema_editor):
    from django.apps import apps as global_apps
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after all migrations; create them now so groups can hold them.
    for app_config in global_apps.get_app_configs():
        create_permissions(app_config, verbosity=0, apps=apps)

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, grants in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        perms = []
        for app_label, which in grants.items():
            qs = Permission.objects.filter(content_type__app_label=app_label)
            if which == "view":
                qs = qs.filter(codename__startswith="view_")
            elif which != "all":
                qs = qs.filter(codename__in=which)
            perms.extend(qs)
        group.permissions.set(perms)


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("clients", "0001_initial"),
        ("connections", "0001_initial"),
        ("otp_totp", "0003_add_timestamps"),
        ("axes", "0010_accessattemptexpiration"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
