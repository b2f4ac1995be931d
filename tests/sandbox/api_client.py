"""A tiny raw-HTTP API client for the sandbox's own tests (no SDK in between)."""

from __future__ import annotations

import requests


class Api:
    """A tiny API client bound to one bearer token."""

    def __init__(self, sandbox, token: str) -> None:
        self.base = sandbox.api_url
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, **params):
        return self.http.get(self.base + path, params=params or None)

    def send(self, method: str, path: str, json=None):
        return self.http.request(method, self.base + path, json=json)


def error_code(response) -> int:
    """The first error code of a failed API answer (asserting the failure envelope)."""
    body = response.json()
    assert body["success"] is False and body["result"] is None
    return body["errors"][0]["code"]
