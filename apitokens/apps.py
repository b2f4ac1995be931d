from __future__ import annotations

from django.apps import AppConfig


class ApiTokensConfig(AppConfig):
    name = "apitokens"
    verbose_name = "Migration off API tokens"

    def ready(self) -> None:
        # Actions of a client still on an API token run with that token until cutover: the gate
        # asks this app for the client's current token through operations.credentials.
        from operations import credentials

        from . import selectors, signals  # noqa: F401 - signals: links new grants to migrations

        credentials.register_provider(selectors.token_credentials_for)
        credentials.register_auth_error_hook(selectors.token_verify_due_now)
