"""ASGI entry point of the MCP server: `uvicorn agents.asgi:app` (its own process, see Procfile.dev)."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agencyportal.settings")
django.setup()

from .mcp_server import build_app  # noqa: E402 - needs Django set up first

app = build_app()
