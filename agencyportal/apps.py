from __future__ import annotations

from django.apps import AppConfig


class AgencyPortalConfig(AppConfig):
    name = "agencyportal"
    verbose_name = "Agency Portal"

    def ready(self) -> None:
        from . import checks, security  # noqa: F401  (registers system checks and signal receivers)
