from __future__ import annotations

from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "operations"
    verbose_name = "Actions in client accounts"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the scope audit system check
