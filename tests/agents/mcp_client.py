"""The real `mcp` client (Streamable HTTP + its OAuthClientProvider) against the live portal."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
from mcp.client.auth import OAuthClientProvider
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@dataclass
class Agent:
    """One MCP client: its storage (tokens, registration) and what it saw along the way."""

    mcp_url: str
    redirect_uri: str
    approve: Callable[[str], dict[str, str]]  # authorization URL -> redirect query (code, state, iss)
    client_metadata_url: str | None = None
    name: str = "Ops Assistant"
    storage: MemoryStorage = field(default_factory=MemoryStorage)
    authorization_urls: list[str] = field(default_factory=list)
    requests_seen: list[str] = field(default_factory=list)

    def provider(self) -> OAuthClientProvider:
        redirect: dict[str, Any] = {}

        async def redirect_handler(url: str) -> None:
            self.authorization_urls.append(url)
            redirect["query"] = await anyio.to_thread.run_sync(self.approve, url)

        async def callback_handler() -> AuthorizationCodeResult:
            query = redirect.pop("query")
            if "code" not in query:
                raise RuntimeError(f"authorization refused: {query}")
            return AuthorizationCodeResult(code=query["code"], state=query.get("state"), iss=query.get("iss"))

        return OAuthClientProvider(
            server_url=self.mcp_url,
            client_metadata=OAuthClientMetadata(
                client_name=self.name,
                redirect_uris=[self.redirect_uri],
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"],
                token_endpoint_auth_method="none",
            ),
            storage=self.storage,
            redirect_handler=redirect_handler,
            callback_handler=callback_handler,
            client_metadata_url=self.client_metadata_url,
        )

    def run(self, fn: Callable[[ClientSession], Awaitable[Any]]) -> Any:
        """Connect (authorizing if needed), run `fn(session)`, disconnect."""

        async def main():
            async def log_request(request):
                self.requests_seen.append(f"{request.method} {request.url}")

            async with httpx2.AsyncClient(
                auth=self.provider(), timeout=30, event_hooks={"request": [log_request]}
            ) as http:
                async with streamable_http_client(self.mcp_url, http_client=http) as (read, write):
                    async with ClientSession(read, write) as session:
                        await session.initialize()
                        return await fn(session)

        return anyio.run(main)


async def list_tool_names(session: ClientSession) -> list[str]:
    return sorted(tool.name for tool in (await session.list_tools()).tools)
