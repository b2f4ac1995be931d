"""API tokens as Cloudflare issues them: permission groups, policies and resources.

A token carries ``policies: [{id, effect, resources, permission_groups}]`` [doc]. Each permission
group is scoped to one level of resource (``com.cloudflare.api.user``, ``com.cloudflare.api.account``
or ``com.cloudflare.api.account.zone``); resources are keys such as
``com.cloudflare.api.account.zone.<zone_id>``, ``com.cloudflare.api.account.<account_id>`` (value
``"*"``, or a nested ``{"com.cloudflare.api.account.zone.*": "*"}`` meaning every zone of that
account), the wildcards ``…account.*`` / ``…account.zone.*`` and ``com.cloudflare.api.user.<user_id>``.

The sandbox maps every permission group onto the scope id its route table checks (the OAuth scope
where one exists, so one enforcement path serves OAuth and API tokens). A request is allowed when an
``allow`` policy names a group with the route's scope on a resource covering the target, and no
``deny`` policy does the same: deny wins [doc]. Groups without an OAuth equivalent ("Cloudflare
Tunnel Write", "Workers Tail Read", the token-management groups) get sandbox-internal scope ids that
no OAuth grant can hold.

User-owned tokens are ``cfut_`` + 40 characters [doc]; account-owned tokens ``cfat_`` + 40
[doc], listed under ``/accounts/{account_id}/tokens`` and limited to their account.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Final

from .scopes import CATALOGUE
from .seed import stable_id

ACCOUNT_TOKEN_PREFIX: Final = "cfat_"

USER: Final = "com.cloudflare.api.user"
ACCOUNT: Final = "com.cloudflare.api.account"
ZONE: Final = "com.cloudflare.api.account.zone"


@dataclass(frozen=True)
class PermissionGroup:
    """One permission group: Cloudflare's name and resource level, and the scope id it grants here."""

    name: str
    level: str
    scope: str
    category: str

    @property
    def id(self) -> str:
        """Stable 32-hex id (the sandbox's own; Cloudflare's ids differ, match groups by name)."""
        return stable_id("permission_group:" + self.name)

    @property
    def oauth_scope(self) -> str | None:
        """The OAuth scope with the same reach, or ``None`` when OAuth has no equivalent."""
        return self.scope if self.scope in CATALOGUE else None

    def view(self) -> dict[str, Any]:
        """Cloudflare's shape for ``GET /user/tokens/permission_groups``."""
        return {
            "id": self.id,
            "name": self.name,
            "scopes": [self.level],
            "category": self.category,
            "is_selectable": True,
        }


PERMISSION_GROUPS: Final[tuple[PermissionGroup, ...]] = (
    PermissionGroup("Zone Read", ZONE, "zone.read", "dns_and_zones"),
    PermissionGroup("Zone Write", ZONE, "zone.write", "dns_and_zones"),
    PermissionGroup("DNS Read", ZONE, "dns.read", "dns_and_zones"),
    PermissionGroup("DNS Write", ZONE, "dns.write", "dns_and_zones"),
    PermissionGroup("Zone Settings Read", ZONE, "zone-settings.read", "dns_and_zones"),
    PermissionGroup("Zone Settings Write", ZONE, "zone-settings.write", "dns_and_zones"),
    PermissionGroup("Cache Purge", ZONE, "cache.purge", "cache_and_performance"),
    PermissionGroup("Analytics Read", ZONE, "analytics.read", "analytics_and_logs"),
    PermissionGroup("Logs Write", ZONE, "logs.write", "analytics_and_logs"),
    PermissionGroup("Account Settings Read", ACCOUNT, "account-settings.read", "account_and_billing"),
    PermissionGroup("Workers Scripts Write", ACCOUNT, "workers-scripts.write", "developer_platform"),
    PermissionGroup("Workers Tail Read", ACCOUNT, "workers-tail.read", "developer_platform"),
    PermissionGroup("Cloudflare Tunnel Write", ACCOUNT, "tunnel.write", "cloudflare_one_and_zero_trust"),
    PermissionGroup("Account API Tokens Read", ACCOUNT, "account-api-tokens.read", "account_and_billing"),
    PermissionGroup("Account API Tokens Write", ACCOUNT, "account-api-tokens.write", "account_and_billing"),
    PermissionGroup("User Details Read", USER, "user-details.read", "account_and_billing"),
    PermissionGroup("API Tokens Read", USER, "api-tokens.read", "account_and_billing"),
    PermissionGroup("API Tokens Write", USER, "api-tokens.write", "account_and_billing"),
)

#: The dashboard labels writes "Edit" ("Zone: Edit"); accepted as aliases when tokens are created.
_ALIASES: Final = {"zone edit": "Zone Write", "dns edit": "DNS Write", "zone settings edit": "Zone Settings Write"}
_BY_KEY: Final[dict[str, PermissionGroup]] = {
    **{g.name.lower(): g for g in PERMISSION_GROUPS},
    **{g.id: g for g in PERMISSION_GROUPS},
    **{g.scope: g for g in PERMISSION_GROUPS},
}
#: Scope id -> resource level, for the handlers that filter lists by the caller's reach.
SCOPE_LEVEL: Final[dict[str, str]] = {g.scope: g.level for g in PERMISSION_GROUPS}


def find_group(key: str) -> PermissionGroup | None:
    """A permission group by name (case-insensitive, "Edit" aliases), id or scope id."""
    value = key.strip()
    return _BY_KEY.get(value) or _BY_KEY.get(value.lower()) or _BY_KEY.get(_ALIASES.get(value.lower(), "").lower())


def new_account_token() -> str:
    """Account-owned API token: ``cfat_`` + 40 URL-safe characters."""
    return ACCOUNT_TOKEN_PREFIX + secrets.token_urlsafe(30)


# ------------------------------------------------------------------------------------------ targets


@dataclass(frozen=True)
class Target:
    """What a request acts on: a zone (with its account, if it exists), an account or the user."""

    level: str
    id: str
    account_id: str | None = None


def _covers(resources: dict[str, Any], target: Target) -> bool:
    """Whether a policy's resources reach the target (exact keys and the documented wildcards)."""
    if target.level == USER:
        return f"{USER}.{target.id}" in resources or f"{USER}.*" in resources
    if target.level == ACCOUNT:
        return any(
            key in (f"{ACCOUNT}.{target.id}", f"{ACCOUNT}.*") and value == "*" for key, value in resources.items()
        )
    zone_keys = (f"{ZONE}.{target.id}", f"{ZONE}.*")
    for key, value in resources.items():
        if key in zone_keys:
            return True
        # "Every zone of account X": {"com.cloudflare.api.account.X": {"com.cloudflare.api.account.zone.*": "*"}}
        account_keys = (f"{ACCOUNT}.*",) + ((f"{ACCOUNT}.{target.account_id}",) if target.account_id else ())
        if key in account_keys and isinstance(value, dict) and any(k in zone_keys for k in value):
            return True
    return False


def policies_allow(policies: list[dict[str, Any]], scope: str, target: Target) -> bool:
    """Allow when some ``allow`` policy grants ``scope`` on the target and no ``deny`` policy does."""
    allowed = False
    for policy in policies:
        if not any(_group_scope(g) == scope for g in policy["permission_groups"]):
            continue
        if not _covers(policy["resources"], target):
            continue
        if policy["effect"] == "deny":
            return False
        allowed = True
    return allowed


def policies_scopes(policies: list[dict[str, Any]]) -> frozenset[str]:
    """Scope ids some ``allow`` policy grants somewhere (a first, reach-blind check)."""
    return frozenset(
        scope
        for policy in policies
        if policy["effect"] == "allow"
        for scope in (_group_scope(g) for g in policy["permission_groups"])
        if scope
    )


def _group_scope(group: dict[str, Any]) -> str | None:
    found = find_group(str(group.get("id", "")))
    return found.scope if found else None


def legacy_policies(scopes: list[str], accounts: list[str] | str, user_id: str) -> list[dict[str, Any]]:
    """Policies equivalent to a permission list over accounts (tokens stored by an older sandbox)."""
    groups = [g for g in (find_group(s) for s in scopes) if g is not None]
    return dashboard_policies(groups, user_id=user_id, accounts=accounts)


def dashboard_policies(
    groups: list[PermissionGroup], *, user_id: str, accounts: list[str] | str, zones: list[str] | None = None
) -> list[dict[str, Any]]:
    """One allow policy per resource level, as Cloudflare's dashboard builds them: zone groups over
    ``zones`` (or every zone of ``accounts``), account groups over ``accounts``, user groups over
    the owner."""
    policies = []
    for level in (USER, ACCOUNT, ZONE):
        chosen = [g for g in groups if g.level == level]
        if not chosen:
            continue
        if level == USER:
            resources: dict[str, Any] = {f"{USER}.{user_id}": "*"}
        elif level == ZONE and zones is not None:
            resources = {f"{ZONE}.{z}": "*" for z in zones}
        elif accounts == "all":
            resources = {f"{ACCOUNT}.*": {f"{ZONE}.*": "*"}} if level == ZONE else {f"{ACCOUNT}.*": "*"}
        elif level == ZONE:
            resources = {f"{ACCOUNT}.{a}": {f"{ZONE}.*": "*"} for a in accounts}
        else:
            resources = {f"{ACCOUNT}.{a}": "*" for a in accounts}
        policies.append(policy_view("allow", chosen, resources))
    return policies


def policy_view(effect: str, groups: list[PermissionGroup], resources: dict[str, Any]) -> dict[str, Any]:
    """A stored policy, in Cloudflare's shape."""
    return {
        "id": secrets.token_hex(16),
        "effect": effect,
        "resources": resources,
        "permission_groups": [{"id": g.id, "name": g.name} for g in groups],
    }
