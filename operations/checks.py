"""System check `operations.W001`: an OAuth app requests a scope no catalogue action uses.

Asking a client for a permission the agency never uses costs trust at consent time and widens
what a leaked token could do. The check reads the OAuth apps from the database; when the database
is not there yet (before `migrate`) it says nothing.
"""

from __future__ import annotations

from django.core.checks import Warning, register
from django.db import DatabaseError

from .catalogue import unused_scopes


@register("operations")
def check_app_scopes(app_configs=None, **kwargs) -> list[Warning]:
    from connections.models import OAuthApp

    try:
        apps = list(OAuthApp.objects.filter(is_active=True).only("id", "name", "required_scopes", "optional_scopes"))
    except DatabaseError:
        return []
    warnings = []
    for app in apps:
        unused = unused_scopes(app.all_scopes)
        if unused:
            warnings.append(
                Warning(
                    f"OAuth app {app.name!r} requests scopes no action uses: {', '.join(unused)}.",
                    hint="Remove them from the app (here and at Cloudflare), or add the action that needs them "
                    "to operations/catalogue.py.",
                    obj=app,
                    id="operations.W001",
                )
            )
    return warnings
