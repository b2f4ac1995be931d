"""Cloudflare OAuth scopes in plain words, for client contacts.

Cloudflare's catalogue (`GET /client/v4/oauth/scopes`) names scopes for engineers ("DNS Write").
A client contact deciding whether to trust the agency needs to read what the agency will be able
to *do*: "Read and change DNS records in your zones". Every scope an agency app is likely to
request has a sentence here; an unknown id falls back to a readable form of the id itself, so a
newly added scope still shows something honest instead of nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

OFFLINE_ACCESS = "offline_access"

# Scope id -> what the agency can do with it, in the words of the person granting it.
DESCRIPTIONS: dict[str, str | Promise] = {
    OFFLINE_ACCESS: _("Stay connected without asking you to sign in again (you can disconnect at any time)"),
    # Account and billing.
    "user-details.read": _("See your Cloudflare user profile (name and email address)"),
    "user-details.write": _("Change your Cloudflare user profile"),
    "account-settings.read": _("See the names and settings of the Cloudflare accounts you choose"),
    "account-settings.write": _("Change the settings of the Cloudflare accounts you choose"),
    "memberships.read": _("See which Cloudflare accounts you are a member of"),
    "memberships.write": _("Change your account memberships"),
    "billing.read": _("See billing details and invoices"),
    "billing.write": _("Change billing details and subscriptions"),
    # DNS and zones.
    "zone.read": _("See your zones (domains) and their status and plan"),
    "zone.write": _("Add, change and remove zones (domains)"),
    "dns.read": _("See the DNS records of your zones"),
    "dns.write": _("Read and change DNS records in your zones"),
    "zone-settings.read": _("See zone settings such as SSL mode, caching level and security level"),
    "zone-settings.write": _("Change zone settings such as SSL mode, caching level and security level"),
    # Cache and performance.
    "cache.purge": _("Clear Cloudflare's cache for your sites, so visitors see fresh content"),
    # Analytics and logs.
    "analytics.read": _("See traffic analytics for your zones"),
    "logs.read": _("Read request logs for your zones"),
    "logs.write": _("Set up and change log delivery"),
    # Security.
    "firewall.read": _("See firewall and security rules"),
    "firewall.write": _("Change firewall and security rules"),
    "ssl-certs.read": _("See SSL/TLS certificates"),
    "ssl-certs.write": _("Order, upload and change SSL/TLS certificates"),
    # Rules.
    "page-rules.read": _("See page rules"),
    "page-rules.write": _("Change page rules"),
    # Developer platform.
    "workers-scripts.read": _("See Workers scripts"),
    "workers-scripts.write": _("Deploy and change Workers scripts"),
    "workers-routes.read": _("See Workers routes"),
    "workers-routes.write": _("Change Workers routes"),
    "workers-kv.read": _("Read Workers KV storage"),
    "workers-kv.write": _("Change Workers KV storage"),
    "d1.read": _("Read D1 databases"),
    "d1.write": _("Change D1 databases"),
    "r2.read": _("Read R2 storage buckets"),
    "r2.write": _("Change R2 storage buckets"),
    "pages.read": _("See Cloudflare Pages projects"),
    "pages.write": _("Deploy and change Cloudflare Pages projects"),
    # Network services.
    "load-balancers.read": _("See load balancers"),
    "load-balancers.write": _("Change load balancers"),
    # Zero Trust.
    "access.read": _("See Access applications and policies"),
    "access.write": _("Change Access applications and policies"),
    # Email.
    "email-routing.read": _("See email routing rules"),
    "email-routing.write": _("Change email routing rules"),
    # Media.
    "images.read": _("See Cloudflare Images"),
    "images.write": _("Upload and change Cloudflare Images"),
    "stream.read": _("See Cloudflare Stream videos"),
    "stream.write": _("Upload and change Cloudflare Stream videos"),
    # AI.
    "ai.read": _("See Workers AI models and usage"),
    "ai.write": _("Run and configure Workers AI"),
    "openid": _("Confirm your Cloudflare identity"),
}

_VERBS = {
    "read": _("Read %(resource)s"),
    "write": _("Change %(resource)s"),
    "purge": _("Purge %(resource)s"),
    "edit": _("Change %(resource)s"),
}


def humanise(scope_id: str) -> str:
    """A readable fallback for an id without a sentence: "foo-bar.write" -> "Change foo bar"."""
    resource, _, action = scope_id.partition(".")
    resource = resource.replace("-", " ").replace("_", " ").strip()
    if action in _VERBS:
        return str(_VERBS[action]) % {"resource": resource}
    return scope_id.replace("-", " ").replace("_", " ").replace(".", " ").strip().capitalize()


def describe(scope_id: str) -> str:
    """The sentence for a scope in the active language."""
    return str(DESCRIPTIONS.get(scope_id) or "") or humanise(scope_id)


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
