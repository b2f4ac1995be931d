"""Fetching an agent's Client ID Metadata Document (its client_id is an https URL).

django-oauth-toolkit resolves a URL client_id to an Application through a fetcher class
(`CIMD_METADATA_FETCHER`); its own fetcher (`SafeMetadataFetcher`) is SSRF-hardened: https only,
public addresses only, no redirects, a size cap and a time limit. Production uses it as it is.

This one adds a single case for tests and local demos: with AGENT_METADATA_ALLOW_LOOPBACK on, a
document on 127.0.0.1 is fetched with `requests` under the same rules (https, TLS verified, with
AGENT_METADATA_CA_BUNDLE as the trusted CA when set; no redirects; size and time limits).
The document itself (client_id equal to the URL, public client, redirect_uris) is validated by
django-oauth-toolkit, and agents.views refuses redirect URIs that are not https or loopback.
"""

from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlsplit

import requests
from django.conf import settings
from oauth2_provider.cimd import CIMDError, SafeMetadataFetcher, _effective_max_age, _validate_client_id_url
from oauth2_provider.settings import oauth2_settings


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MetadataFetcher(SafeMetadataFetcher):
    def fetch(self, client_id):
        data, max_age = self._fetch(client_id)
        uris = data.get("redirect_uris")
        if isinstance(uris, list) and not all(isinstance(u, str) and redirect_uri_ok(u) for u in uris):
            raise CIMDError("redirect_uris must be https, or http on a loopback address")
        return data, max_age

    def _fetch(self, client_id):
        parsed = _validate_client_id_url(client_id)
        if not (settings.AGENT_METADATA_ALLOW_LOOPBACK and _is_loopback(parsed.hostname)):
            return super().fetch(client_id)
        max_size = oauth2_settings.CIMD_MAX_DOCUMENT_SIZE
        try:
            with requests.get(
                client_id,
                timeout=oauth2_settings.CIMD_FETCH_TIMEOUT_SECONDS,
                allow_redirects=False,
                stream=True,
                verify=settings.AGENT_METADATA_CA_BUNDLE or True,
                headers={"Accept": "application/json"},
            ) as response:
                if response.status_code != 200:
                    raise CIMDError(f"client_id document returned HTTP {response.status_code}")
                body = response.raw.read(max_size + 1, decode_content=True)
                cache_control = response.headers.get("Cache-Control")
        except requests.RequestException as exc:
            raise CIMDError(f"could not fetch client_id document: {exc}") from exc
        if len(body) > max_size:
            raise CIMDError("client_id document exceeds the maximum allowed size")
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise CIMDError("client_id document is not valid JSON") from exc
        if not isinstance(data, dict):
            raise CIMDError("client_id document must be a JSON object")
        return data, _effective_max_age(cache_control)


def redirect_uri_ok(uri: str) -> bool:
    """https anywhere, or http on a loopback address only (native apps, RFC 8252)."""
    parts = urlsplit(uri)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and (_is_loopback(parts.hostname) or parts.hostname == "localhost")
