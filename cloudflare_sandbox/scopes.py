"""The OAuth scope catalogue the sandbox serves and validates against.

Cloudflare documents about 385 dot-style scope ids in 13 categories and serves them at
``GET /client/v4/oauth/scopes`` as ``{id, name, category, scopes[]}`` [doc]. The sandbox carries a
representative subset: the ids the portal is likely to request plus enough neighbours to exercise
catalogue handling. Ids are dot-style because colon-style ids (``zone:read``) are rejected by the
real server [doc]; the display names follow the documented example ("User Details Read") and the
category of each id beyond that example is an informed guess [guess].
"""

from __future__ import annotations

from typing import Final

#: Categories Cloudflare groups scopes into [doc].
CATEGORIES: Final[tuple[str, ...]] = (
    "account_and_billing",
    "ai_and_machine_learning",
    "analytics_and_logs",
    "app_security",
    "cache_and_performance",
    "cloudflare_one_and_zero_trust",
    "developer_platform",
    "dns_and_zones",
    "email_and_messaging",
    "media",
    "network_services",
    "other",
    "rules_and_configuration",
)

#: ``offline_access`` is not a Cloudflare permission but an OAuth scope that asks for a refresh
#: token [cf-code]. The sandbox lists it in the catalogue under ``other`` so a client that checks
#: its requested scopes against the catalogue does not drop it.
OFFLINE_ACCESS: Final = "offline_access"

# (id, name, category)
_CATALOGUE: Final[tuple[tuple[str, str, str], ...]] = (
    ("account-settings.read", "Account Settings Read", "account_and_billing"),
    ("account-settings.write", "Account Settings Write", "account_and_billing"),
    ("user-details.read", "User Details Read", "account_and_billing"),
    ("user-details.write", "User Details Write", "account_and_billing"),
    ("memberships.read", "Memberships Read", "account_and_billing"),
    ("memberships.write", "Memberships Write", "account_and_billing"),
    ("billing.read", "Billing Read", "account_and_billing"),
    ("billing.write", "Billing Write", "account_and_billing"),
    ("zone.read", "Zone Read", "dns_and_zones"),
    ("zone.write", "Zone Write", "dns_and_zones"),
    ("dns.read", "DNS Read", "dns_and_zones"),
    ("dns.write", "DNS Write", "dns_and_zones"),
    ("zone-settings.read", "Zone Settings Read", "dns_and_zones"),
    ("zone-settings.write", "Zone Settings Write", "dns_and_zones"),
    ("cache.purge", "Cache Purge", "cache_and_performance"),
    ("analytics.read", "Analytics Read", "analytics_and_logs"),
    ("logs.read", "Logs Read", "analytics_and_logs"),
    ("logs.write", "Logs Write", "analytics_and_logs"),
    ("firewall.read", "Firewall Services Read", "app_security"),
    ("firewall.write", "Firewall Services Write", "app_security"),
    ("ssl-certs.read", "SSL and Certificates Read", "app_security"),
    ("ssl-certs.write", "SSL and Certificates Write", "app_security"),
    ("page-rules.read", "Page Rules Read", "rules_and_configuration"),
    ("page-rules.write", "Page Rules Write", "rules_and_configuration"),
    ("workers-scripts.read", "Workers Scripts Read", "developer_platform"),
    ("workers-scripts.write", "Workers Scripts Write", "developer_platform"),
    ("workers-routes.read", "Workers Routes Read", "developer_platform"),
    ("workers-routes.write", "Workers Routes Write", "developer_platform"),
    ("workers-kv.read", "Workers KV Storage Read", "developer_platform"),
    ("workers-kv.write", "Workers KV Storage Write", "developer_platform"),
    ("d1.read", "D1 Read", "developer_platform"),
    ("d1.write", "D1 Write", "developer_platform"),
    ("r2.read", "Workers R2 Storage Read", "developer_platform"),
    ("r2.write", "Workers R2 Storage Write", "developer_platform"),
    ("pages.read", "Pages Read", "developer_platform"),
    ("pages.write", "Pages Write", "developer_platform"),
    ("load-balancers.read", "Load Balancers Read", "network_services"),
    ("load-balancers.write", "Load Balancers Write", "network_services"),
    ("access.read", "Access: Apps and Policies Read", "cloudflare_one_and_zero_trust"),
    ("access.write", "Access: Apps and Policies Write", "cloudflare_one_and_zero_trust"),
    ("email-routing.read", "Email Routing Read", "email_and_messaging"),
    ("email-routing.write", "Email Routing Write", "email_and_messaging"),
    ("images.read", "Images Read", "media"),
    ("images.write", "Images Write", "media"),
    ("stream.read", "Stream Read", "media"),
    ("stream.write", "Stream Write", "media"),
    ("ai.read", "Workers AI Read", "ai_and_machine_learning"),
    ("ai.write", "Workers AI Write", "ai_and_machine_learning"),
    (OFFLINE_ACCESS, "Offline Access", "other"),
)

#: Scope id -> {"id", "name", "category", "scopes"} in catalogue order.
CATALOGUE: Final[dict[str, dict[str, object]]] = {
    scope_id: {"id": scope_id, "name": name, "category": category, "scopes": []}
    for scope_id, name, category in _CATALOGUE
}

#: Scope ids a client may be registered with: the catalogue plus ``openid`` (which Cloudflare
#: rejects with ``invalid_scope`` unless the client is registered for it [3p]).
REGISTRABLE: Final[frozenset[str]] = frozenset(CATALOGUE) | {"openid"}

_BY_NAME: Final[dict[str, str]] = {name.lower(): scope_id for scope_id, name, _ in _CATALOGUE}


def scope_name(scope_id: str) -> str:
    """Human name shown on the consent page; unknown ids are shown as they are."""
    entry = CATALOGUE.get(scope_id)
    return str(entry["name"]) if entry else scope_id


def permission_to_scope(permission: str) -> str | None:
    """Map a legacy API-token permission ("DNS Write" or "dns.write") to a scope id.

    Legacy ``cfut_`` tokens carry permission groups rather than OAuth scopes; mapping them onto the
    same ids lets one enforcement path serve both kinds of token (needed by the later migration from
    API tokens to OAuth).
    """
    value = permission.strip()
    if value in CATALOGUE:
        return value
    return _BY_NAME.get(value.lower())


def is_dot_style(scope_id: str) -> bool:
    """True for ids shaped like Cloudflare's (``zone.read``), false for colon-style legacy names."""
    return ":" not in scope_id and bool(scope_id)
