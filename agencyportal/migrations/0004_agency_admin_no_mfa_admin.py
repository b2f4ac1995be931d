"""Agency admins no longer manage other staff members' authenticators (TOTP devices).

Holding `otp_totp` permissions let an agency admin read a superuser's seed on the device page and
add a confirmed device to another user. Staff now manage only their own authenticator (enrolment,
and reset with re-authentication, on the admin site's own pages); a superuser can still remove
someone's device (they enrol again at their next sign-in), and seeds are never displayed
(`OTP_ADMIN_HIDE_SENSITIVE_DATA`).
"""

from __future__ import annotations

from django.db import migrations


def drop_otp_permissions(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    otp = Permission.objects.filter(content_type__app_label="otp_totp")
    for group in Group.objects.filter(name="Agency admin"):
        group.permissions.remove(*otp)


def restore_otp_permissions(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    otp = Permission.objects.filter(content_type__app_label="otp_totp")
    for group in Group.objects.filter(name="Agency admin"):
        group.permissions.add(*otp)


class Migration(migrations.Migration):
    dependencies = [("agencyportal", "0003_refresh_counters")]

    operations = [migrations.RunPython(drop_otp_permissions, restore_otp_permissions)]
