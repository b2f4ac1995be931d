"""Minimal request and response types shared by the sandbox's handlers.

The sandbox must run on the standard library alone, so instead of a framework it has these two
small types and plain functions that turn one into the other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs

JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"


@dataclass
class Request:
    """One parsed HTTP request."""

    method: str
    path: str
    raw_query: str
    headers: Mapping[str, str]
    body: bytes
    client_ip: str = "127.0.0.1"

    @cached_property
    def query(self) -> dict[str, list[str]]:
        """Query parameters (``+`` decoded as a space, as in HTML forms)."""
        return parse_qs(self.raw_query, keep_blank_values=True)

    def arg(self, name: str, default: str | None = None) -> str | None:
        """First value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else default

    @cached_property
    def form(self) -> dict[str, list[str]]:
        """``application/x-www-form-urlencoded`` body parameters."""
        return parse_qs(self.body.decode("utf-8", errors="replace"), keep_blank_values=True)

    def form_value(self, name: str) -> str | None:
        """First value of a form field."""
        values = self.form.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        """The JSON body (``None`` when empty); raises ``ValueError`` when malformed."""
        if not self.body.strip():
            return None
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        """Media type without parameters, lower-cased."""
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def cookie(self, name: str) -> str | None:
        """Value of one cookie, if present and parseable."""
        raw = self.headers.get("Cookie")
        if not raw:
            return None
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw)
        except CookieError:
            return None
        morsel = jar.get(name)
        return morsel.value if morsel else None


@dataclass
class Response:
    """One HTTP response; ``drop_connection`` closes the socket without sending anything."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop_connection: bool = False

    def with_header(self, name: str, value: str) -> Response:
        """Add a header and return self (for chaining)."""
        self.headers.append((name, value))
        return self


def json_response(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    """A JSON response."""
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return Response(status, body, [("Content-Type", JSON_TYPE), *(headers or [])])


def html_response(status: int, text: str, headers: list[tuple[str, str]] | None = None) -> Response:
    """An HTML page that must not be cached or framed."""
    return Response(
        status,
        text.encode("utf-8"),
        [
            ("Content-Type", HTML_TYPE),
            ("Cache-Control", "no-store"),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "no-referrer"),
            *(headers or []),
        ],
    )


def redirect(location: str, status: int = 303, headers: list[tuple[str, str]] | None = None) -> Response:
    """A redirect without a body."""
    return Response(status, b"", [("Location", location), ("Cache-Control", "no-store"), *(headers or [])])
