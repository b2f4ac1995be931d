"""The authorization server's endpoints, under the namespace django-oauth-toolkit expects."""

from __future__ import annotations

from django.urls import path
from oauth2_provider import views as dot

from . import views

app_name = "oauth2_provider"

urlpatterns = [
    path("authorize/", views.AgentAuthorizationView.as_view(), name="authorize"),
    path("token/", views.AgentTokenView.as_view(), name="token"),
    path("revoke/", dot.RevokeTokenView.as_view(), name="revoke-token"),
    path("register/", views.AgentRegistrationView.as_view(), name="dcr-register"),
    # RFC 7592 management of a registration (read, update, delete with its registration token).
    path(
        "register/<str:client_id>/",
        dot.DynamicClientRegistrationManagementView.as_view(),
        name="dcr-register-management",
    ),
]
