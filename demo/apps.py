from __future__ import annotations

from django.apps import AppConfig


class DemoConfig(AppConfig):
    """What only the `make run` demo needs: seeding against the local Cloudflare sandbox.

    The one app allowed to import `cloudflare_sandbox`; the product reaches Cloudflare (or the sandbox)
    only over HTTP through the configured URLs (tests/test_boundaries.py).
    """

    name = "demo"
    verbose_name = "Demo"
