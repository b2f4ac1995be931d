from __future__ import annotations

from django.urls import path

from . import views

app_name = "clients"

urlpatterns = [
    path("", views.home, name="home"),
    path("help/", views.help_page, name="help"),
    path("settings/", views.settings_page, name="settings"),
    path("login/", views.PortalLoginView.as_view(), name="login"),
    path("logout/", views.PortalLogoutView.as_view(), name="logout"),
    # The invitation link: validates the token, moves it into the session, then redirects.
    path("invite/<str:token>/", views.set_password, name="set_password"),
    path("welcome/set-password/", views.set_password_form, name="set_password_form"),
]
