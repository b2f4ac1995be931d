"""Cloudflare OAuth scopes in plain words, for client contacts.

Cloudflare's catalogue (`GET /client/v4/oauth/scopes`) names scopes for engineers ("DNS Write").
A client contact deciding whether to trust the agency needs to read what the agency will be able
to *do*: "Read and change DNS records in your zones". Every scope an agency app is likely to
request has a sentence here; an unknown id falls back to a readable form of the id itself, so a
newly added scope still shows something honest instead of nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

OFFLINE_ACCESS = "offline_access"

# Scope id -> what the agency can do with it, in the words of the person granting it.
DESCRIPTIONS: dict[str, str] = {
    OFFLINE_ACCESS: "Stay connected without asking you to sign in again (you can disconnect at any time)",
    # Account and billing.
    "user-details.read": "See your Cloudflare user profile (name and email address)",
    "user-details.write": "Change your Cloudflare user profile",
    "account-settings.read": "See the names and settings of the Cloudflare accounts you choose",
    "account-settings.write": "Change the settings of the Cloudflare accounts you choose",
    "memberships.read": "See which Cloudflare accounts you are a member of",
    "memberships.write": "Change your account memberships",
    "billing.read": "See billing details and invoices",
    "billing.write": "Change billing details and subscriptions",
    # DNS and zones.
    "zone.read": "See your zones (domains) and their status and plan",
    "zone.write": "Add, change and remove zones (domains)",
    "dns.read": "See the DNS records of your zones",
    "dns.write": "Read and change DNS records in your zones",
    "zone-settings.read": "See zone settings such as SSL mode, caching level and security level",
    "zone-settings.write": "Change zone settings such as SSL mode, caching level and security level",
    # Cache and performance.
    "cache.purge": "Clear Cloudflare's cache for your sites, so visitors see fresh content",
    # Analytics and logs.
    "analytics.read": "See traffic analytics for your zones",
    "logs.read": "Read request logs for your zones",
    "logs.write": "Set up and change log delivery",
    # Security.
    "firewall.read": "See firewall and security rules",
    "firewall.write": "Change firewall and security rules",
    "ssl-certs.read": "See SSL/TLS certificates",
    "ssl-certs.write": "Order, upload and change SSL/TLS certificates",
    # Rules.
    "page-rules.read": "See page rules",
    "page-rules.write": "Change page rules",
    # Developer platform.
    "workers-scripts.read": "See Workers scripts",
    "workers-scripts.write": "Deploy and change Workers scripts",
    "workers-routes.read": "See Workers routes",
    "workers-routes.write": "Change Workers routes",
    "workers-kv.read": "Read Workers KV storage",
    "workers-kv.write": "Change Workers KV storage",
    "d1.read": "Read D1 databases",
    "d1.write": "Change D1 databases",
    "r2.read": "Read R2 storage buckets",
    "r2.write": "Change R2 storage buckets",
    "pages.read": "See Cloudflare Pages projects",
    "pages.write": "Deploy and change Cloudflare Pages projects",
    # Network services.
    "load-balancers.read": "See load balancers",
    "load-balancers.write": "Change load balancers",
    # Zero Trust.
    "access.read": "See Access applications and policies",
    "access.write": "Change Access applications and policies",
    # Email.
    "email-routing.read": "See email routing rules",
    "email-routing.write": "Change email routing rules",
    # Media.
    "images.read": "See Cloudflare Images",
    "images.write": "Upload and change Cloudflare Images",
    "stream.read": "See Cloudflare Stream videos",
    "stream.write": "Upload and change Cloudflare Stream videos",
    # AI.
    "ai.read": "See Workers AI models and usage",
    "ai.write": "Run and configure Workers AI",
    "openid": "Confirm your Cloudflare identity",
}

_VERBS = {"read": "Read", "write": "Change", "purge": "Purge", "edit": "Change"}


def humanise(scope_id: str) -> str:
    """A readable fallback for an id without a sentence: "foo-bar.write" -> "Change foo bar"."""
    resource, _, action = scope_id.partition(".")
    resource = resource.replace("-", " ").replace("_", " ").strip()
    if action in _VERBS:
        return f"{_VERBS[action]} {resource}"
    return scope_id.replace("-", " ").replace("_", " ").replace(".", " ").strip().capitalize()


def describe(scope_id: str) -> str:
    return DESCRIPTIONS.get(scope_id) or humanise(scope_id)


@dataclass(frozen=True)
class ScopeLine:
    """One scope as shown to a person: id (for staff), plain sentence, and its role."""

    id: str
    text: str
    required: bool

    @property
    def is_offline_access(self) -> bool:
        return self.id == OFFLINE_ACCESS


def scope_lines(scope_ids: list[str], *, required: list[str] | tuple[str, ...] = ()) -> list[ScopeLine]:
    """Plain-language lines for a list of scopes, in order, without duplicates.

    `offline_access` is always required: without it there is no refresh token and the connection
    would break within hours.
    """
    needed = {*required, OFFLINE_ACCESS}
    return [ScopeLine(s, describe(s), s in needed) for s in dict.fromkeys(scope_ids)]
