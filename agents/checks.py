"""Deployment checks for agents: the MCP resource over https, no test-only metadata fetching."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, register


@register(Tags.security, deploy=True)
def agents_checks(app_configs, **kwargs):
    errors = []
    if not settings.MCP_URL.startswith("https://"):
        errors.append(
            Error(
                f"MCP_URL is not an https:// URL ({settings.MCP_URL}).",
                hint="Agent access tokens would cross the network in clear text.",
                id="agents.E001",
            )
        )
    if settings.AGENT_METADATA_ALLOW_LOOPBACK or settings.AGENT_METADATA_CA_BUNDLE:
        errors.append(
            Error(
                "AGENT_METADATA_ALLOW_LOOPBACK / AGENT_METADATA_CA_BUNDLE are for tests only.",
                hint="Unset them: client metadata documents are fetched from public https addresses only.",
                id="agents.E002",
            )
        )
    return errors
