from __future__ import annotations

from django.apps import AppConfig


class AgencyPortalConfig(AppConfig):
    name = "agencyportal"
    verbose_name = "Agency Portal"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
