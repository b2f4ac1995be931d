from __future__ import annotations

from django.urls import path

from . import views

app_name = "connections"

urlpatterns = [
    # Exactly the redirect URI registered at Cloudflare (OAuthApp.redirect_uri).
    path("cloudflare/callback/", views.callback, name="callback"),
    path("cloudflare/result/", views.result, name="result"),
    path("connect/", views.connect, name="connect"),
    path("grants/<uuid:code>/reconnect/", views.reconnect, name="reconnect"),
    path("grants/<uuid:code>/add-permissions/", views.add_scopes, name="add_scopes"),
    path("grants/<uuid:code>/disconnect/", views.disconnect_view, name="disconnect"),
]
