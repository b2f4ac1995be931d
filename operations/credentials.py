"""Credentials other than a grant: an API token a client still runs on before cutover.

Operations never imports the migration app (the dependency goes one way); the app registers a
provider here when Django starts. The gate asks `token_credentials(client)`: an empty list means
"use the client's grant", as for every client that never had a token or has cut over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TokenCredential:
    """What the gate needs to decide, without the secret (`load_secret` reads it only to run)."""

    token_id: int
    label: str  # the token's name and fingerprint prefix, for the record
    scopes: frozenset[str]  # what its permission groups correspond to in OAuth scope terms
    account_ids: frozenset[str]  # Cloudflare account ids it reaches
    zone_ids: frozenset[str]  # Cloudflare zone ids it reaches
    load_secret: Callable[[], str] = field(repr=False, compare=False, default=lambda: "")

    @property
    def user_key(self) -> str:
        # The per-user request budget: a token counts apart from any grant.
        return f"api-token:{self.token_id}"


_providers: list[Callable] = []
_auth_error_hooks: list[Callable[[int], None]] = []


def register_provider(provider: Callable) -> None:
    if provider not in _providers:
        _providers.append(provider)


def register_auth_error_hook(hook: Callable[[int], None]) -> None:
    if hook not in _auth_error_hooks:
        _auth_error_hooks.append(hook)


def token_credentials(client) -> list[TokenCredential]:
    """The tokens this client's actions run with now (before cutover), best first; [] = the grant."""
    found: list[TokenCredential] = []
    for provider in _providers:
        found.extend(provider(client))
    return found


def token_auth_error(token_id: int) -> None:
    """9109 / 10000 with a token: its verification is made due now (evidence, never proof)."""
    for hook in _auth_error_hooks:
        hook(token_id)
