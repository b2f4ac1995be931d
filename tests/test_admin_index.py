"""The admin's navigation: the agency's own sections first, sign-in machinery grouped after them."""

from __future__ import annotations

from django.contrib import admin
from django.test import RequestFactory

from agencyportal.admin_site import AgencyAdminSite


def _app_list(user) -> list[dict]:
    request = RequestFactory().get("/admin/")
    request.user = user
    site: AgencyAdminSite = admin.site
    return site.get_app_list(request)


def test_it_lists_the_agency_sections_before_one_staff_security_section(agency_admin):
    apps = _app_list(agency_admin)
    labels = [app["app_label"] for app in apps]
    assert labels[-1] == "staff_security"
    assert labels.index("clients") < labels.index("connections") < labels.index("staff_security")
    # Django's and the sign-in libraries' own sections are gone from the top level.
    assert not {"auth", "otp_totp", "axes"} & set(labels)


def test_it_gives_the_staff_security_models_readable_names(agency_admin):
    security = _app_list(agency_admin)[-1]
    names = {model["name"] for model in security["models"]}
    assert {"Users (staff and client contacts)", "Staff roles", "Authenticator apps", "Sign-in lockouts"} <= names
    assert "TOTP devices" not in names and "OTP_TOTP" not in names
    assert security["app_url"].startswith("/admin/")


def test_it_keeps_a_single_app_index_page_unchanged(agency_admin, admin_client):
    response = admin_client.get("/admin/auth/")
    assert response.status_code == 200
    assert "Staff security" not in [app["name"] for app in response.context["app_list"]]
