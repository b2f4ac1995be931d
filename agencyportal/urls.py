from __future__ import annotations

from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from oauth2_provider.views import OAuthServerMetadataView

urlpatterns = [
    path("", RedirectView.as_view(url="/portal/", permanent=False)),
    # Browsers ask for /favicon.ico on every site, whatever the page says.
    path("favicon.ico", RedirectView.as_view(url=static("favicon.svg"), permanent=True)),
    path("admin/", admin.site.urls),
    path("portal/", include("clients.urls")),
    path("oauth/", include("connections.urls")),
    # The migration off API tokens (portal page) and the Cloudflare-compatible proxy for service keys.
    path("portal/", include("apitokens.urls")),
    path("proxy/cloudflare/client/v4/", include("apitokens.proxy_urls")),
    # Agents (MCP clients): the portal is their OAuth authorization server (RFC 8414 metadata at the root).
    path(".well-known/oauth-authorization-server", OAuthServerMetadataView.as_view(), name="oauth-server-metadata"),
    path("agents/oauth/", include("agents.urls")),
]
