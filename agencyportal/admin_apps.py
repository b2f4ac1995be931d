from __future__ import annotations

from django.contrib.admin.apps import AdminConfig


class AgencyAdminConfig(AdminConfig):
    """django.contrib.admin with our site: staff MFA, roles and the fleet dashboard."""

    default_site = "agencyportal.admin_site.AgencyAdminSite"
