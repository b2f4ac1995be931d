"""The MCP server: Streamable HTTP at MCP_URL, an OAuth 2.1 resource server of the portal.

Built on the official `mcp` SDK's low-level `Server` and its Starlette app, which bring:
- the Streamable HTTP transport (stateless, JSON answers: any number of processes can serve it);
- `/.well-known/oauth-protected-resource/<path>` (RFC 9728) naming the portal as the
  authorization server, and `401` with `WWW-Authenticate: Bearer resource_metadata="..."`;
- Host and `Origin` checks (a browser page of another site cannot drive it), a body size limit
  and JSON-RPC validation (malformed requests get a JSON-RPC error; nothing runs).

The token check (`PortalTokenVerifier`, the SDK's hook) looks the bearer token up by its
SHA-256 in django-oauth-toolkit's table (tokens are stored hashed), and accepts it only when it
has not expired, was issued for this exact resource (RFC 8707), and its agent connection is live.
Tools run in a worker thread (the ORM and the Cloudflare SDK are synchronous).
"""

from __future__ import annotations

import hashlib
import logging
from urllib.parse import urlsplit

import mcp_types as types
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connections
from django.utils import timezone
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.lowlevel import Server
from mcp.server.transport_security import TransportSecuritySettings

from . import tools

logger = logging.getLogger(__name__)

SCOPE = "mcp"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _db_work(fn):
    """Run ORM work in a worker thread, leaving no database connection open behind it."""

    def run(*args):
        close_old_connections()
        try:
            return fn(*args)
        finally:
            connections.close_all()

    return sync_to_async(run, thread_sensitive=False)


def _verify(token: str) -> AccessToken | None:
    from oauth2_provider.models import get_access_token_model

    from .models import AgentConnection

    checksum = hashlib.sha256(token.encode("utf-8")).hexdigest()
    row = (
        get_access_token_model()
        .objects.filter(token_checksum=checksum)
        .select_related("application")
        .only("id", "expires", "resource", "scope", "user_id", "application__client_id", "application_id")
        .first()
    )
    if row is None or row.user_id is None or row.expires <= timezone.now():
        return None
    # RFC 8707: only a token issued for this resource; an unrestricted one is refused too.
    if settings.MCP_URL not in (row.resource or []):
        logger.info("agent token %s refused: issued for %s, not this MCP server", row.pk, row.resource)
        return None
    conn = (
        AgentConnection.objects.active()
        .filter(application_id=row.application_id, user_id=row.user_id)
        .values_list("pk", flat=True)
        .first()
    )
    if conn is None:
        return None
    return AccessToken(
        token=token,
        client_id=row.application.client_id,
        scopes=row.scope.split(),
        expires_at=int(row.expires.timestamp()),
        resource=settings.MCP_URL,
        subject=str(row.user_id),
        claims={"iss": settings.SITE_URL, "connection": conn},
    )


class PortalTokenVerifier:
    """The SDK's TokenVerifier hook: a bearer token from the portal's authorization server."""

    async def verify_token(self, token: str) -> AccessToken | None:
        if not token or len(token) > 512:
            return None
        return await _db_work(_verify)(token)


def _connection_id(ctx) -> int | None:
    token = None
    request = getattr(ctx, "request", None)
    user = getattr(request, "user", None) if request is not None else None
    token = getattr(user, "access_token", None) or get_access_token()
    if token is None or not token.claims:
        return None
    return token.claims.get("connection")


def _list_for(connection_id: int) -> list[str]:
    try:
        return tools.list_tools_for(tools.connection_for(connection_id))
    except tools.ToolError:
        return []


def _tool(name: str) -> types.Tool:
    hints = tools.annotations(name)
    return types.Tool(
        name=name,
        title=tools.tool_label(name),
        description=tools.description(name),
        input_schema=tools.input_schema(name),
        annotations=types.ToolAnnotations(
            title=tools.tool_label(name),
            read_only_hint=hints["read_only"],
            destructive_hint=hints["destructive"],
            idempotent_hint=True,
            open_world_hint=False,
        ),
    )


async def on_list_tools(ctx, params) -> types.ListToolsResult:
    connection_id = _connection_id(ctx)
    names = await _db_work(_list_for)(connection_id) if connection_id else []
    return types.ListToolsResult(tools=[_tool(name) for name in names])


async def on_call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
    connection_id = _connection_id(ctx)
    if connection_id is None:
        return types.CallToolResult(content=[types.TextContent(text="Not signed in.")], is_error=True)
    outcome = await _db_work(tools.call_tool)(connection_id, params.name, params.arguments)
    structured = outcome.data if isinstance(outcome.data, dict) else None
    return types.CallToolResult(
        content=[types.TextContent(text=outcome.text)], structured_content=structured, is_error=outcome.is_error
    )


def build_app(*, mcp_url: str | None = None, site_url: str | None = None):
    """The ASGI app serving MCP at `mcp_url` (default: settings.MCP_URL)."""
    mcp_url = (mcp_url or settings.MCP_URL).rstrip("/")
    site_url = (site_url or settings.SITE_URL).rstrip("/")
    parts = urlsplit(mcp_url)
    hosts = [parts.netloc]
    if parts.hostname in ("127.0.0.1", "localhost"):  # a local demo, reached by either name
        port = f":{parts.port}" if parts.port else ""
        hosts = [f"127.0.0.1{port}", f"localhost{port}"]
    server = Server(
        "agency-portal",
        version="1",
        title=f"{settings.SITE_NAME} tools",
        instructions=(
            "Tools to read and change the Cloudflare accounts of the agency's clients, within what a staff "
            "member approved. Destructive tools need confirm=true; without it they return a dry run."
        ),
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )
    return server.streamable_http_app(
        streamable_http_path=urlsplit(mcp_url).path or "/mcp",
        json_response=True,
        stateless_http=True,
        max_request_body_size=settings.MCP_MAX_BODY_BYTES,
        transport_security=TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=hosts,
            allowed_origins=sorted({_origin(mcp_url), _origin(site_url)}),
        ),
        auth=AuthSettings(
            issuer_url=site_url,
            resource_server_url=mcp_url,
            required_scopes=[SCOPE],
            validate_token_resource=True,
            service_documentation_url=None,
        ),
        token_verifier=PortalTokenVerifier(),
    )
