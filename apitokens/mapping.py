"""From Cloudflare API token permission groups to OAuth scopes: the documented table.

Each permission group a token can hold maps to the OAuth scope with the same reach, to nothing
because the portal needs it only for the migration itself (managing the token), or to nothing
at all: a **blocker**, because OAuth has no scope for it (the work stays on an internal token).

Per token (`token_mapping`):

- `scopes`: the smallest scope set that keeps every catalogue action the token allows today
  working, plus the scopes the connection itself needs (`CONNECTION_SCOPES`: the callback reads
  who connected and which accounts and zones they picked, and parity compares that reach);
- `unused`: scopes the token's groups map to that no catalogue action uses: not requested, since
  asking for a permission nothing uses costs the client's trust;
- `blockers`: groups with no OAuth scope;
- `actions`: the catalogue actions that keep working after the switch.

Cloudflare's dashboard calls writes "Edit" ("DNS: Edit"); both spellings are accepted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from operations.catalogue import CATALOGUE, Action, actions_for_scopes

# Permission group name → OAuth scope id. Keep docs/migration.md in step with this table.
PERMISSION_SCOPES: dict[str, str] = {
    "Zone Read": "zone.read",
    "Zone Write": "zone.write",
    "DNS Read": "dns.read",
    "DNS Write": "dns.write",
    "Zone Settings Read": "zone-settings.read",
    "Zone Settings Write": "zone-settings.write",
    "Cache Purge": "cache.purge",
    "Analytics Read": "analytics.read",
    "Logs Write": "logs.write",
    "Account Settings Read": "account-settings.read",
    "Workers Scripts Write": "workers-scripts.write",
    "User Details Read": "user-details.read",
}
# Groups that only manage API tokens: the portal uses them to read the token and to delete it at
# Cloudflare after cutover; a grant never needs them.
MIGRATION_ONLY = frozenset(
    {"API Tokens Read", "API Tokens Write", "Account API Tokens Read", "Account API Tokens Write"}
)
# Groups with no OAuth scope: a token holding one cannot be fully replaced by a grant.
BLOCKERS: dict[str, str] = {
    "Cloudflare Tunnel Write": "Cloudflare Tunnel has no OAuth scope: tunnels cannot be managed through a connection.",
    "Workers Tail Read": "Workers live logs (tail) have no OAuth scope.",
}
# What the connection itself reads on the callback and for parity (who, which accounts, which zones).
CONNECTION_SCOPES = ("user-details.read", "account-settings.read", "zone.read")
# Groups that let a token delete itself at Cloudflare (user-owned and account-owned tokens).
SELF_DELETE_GROUPS = frozenset({"API Tokens Write", "Account API Tokens Write"})
_ALIASES = {"zone edit": "Zone Write", "dns edit": "DNS Write", "zone settings edit": "Zone Settings Write"}
_KNOWN = {name.lower(): name for name in [*PERMISSION_SCOPES, *MIGRATION_ONLY, *BLOCKERS]}


def group_name(value: str) -> str | None:
    """The canonical name of a permission group ("dns edit" → "DNS Write"), or None if unknown."""
    key = " ".join(value.replace(":", " ").split()).lower()
    return _KNOWN.get(key) or _KNOWN.get(_ALIASES.get(key, "").lower())


@dataclass(frozen=True)
class TokenMapping:
    scopes: tuple[str, ...]
    unused: tuple[str, ...]
    blockers: tuple[tuple[str, str], ...]  # (group, why)
    unknown: tuple[str, ...]
    actions: tuple[Action, ...]

    @property
    def blocked(self) -> bool:
        return bool(self.blockers)


def scopes_of(groups: Iterable[str]) -> frozenset[str]:
    """The OAuth scopes a token's groups correspond to (what it can do today, in scope terms)."""
    return frozenset(PERMISSION_SCOPES[g] for g in (group_name(x) for x in groups) if g in PERMISSION_SCOPES)


def token_mapping(groups: Iterable[str]) -> TokenMapping:
    names = list(dict.fromkeys(groups))
    canonical = [group_name(g) for g in names]
    unknown = tuple(n for n, c in zip(names, canonical, strict=True) if c is None)
    blockers = tuple((c, BLOCKERS[c]) for c in canonical if c in BLOCKERS)
    today = scopes_of(names)
    allowed, _ = actions_for_scopes(today)
    needed = frozenset().union(*(a.scopes for a in allowed)) if allowed else frozenset()
    scopes = tuple(s for s in dict.fromkeys([*CONNECTION_SCOPES, *sorted(needed)]))
    used = frozenset(scopes)
    unused = tuple(sorted(s for s in today if s not in used))
    after, _ = actions_for_scopes(scopes)
    return TokenMapping(scopes=scopes, unused=unused, blockers=blockers, unknown=unknown, actions=tuple(after))


def table() -> list[dict[str, str]]:
    """Every known group with its scope or why it has none (admin help and docs)."""
    rows = [{"group": g, "scope": s, "note": ""} for g, s in PERMISSION_SCOPES.items()]
    rows += [
        {"group": g, "scope": "", "note": "Used only to read and delete the token itself"}
        for g in sorted(MIGRATION_ONLY)
    ]
    rows += [{"group": g, "scope": "", "note": f"Blocker: {why}"} for g, why in BLOCKERS.items()]
    return rows


__all__ = ["CATALOGUE", "PERMISSION_SCOPES", "TokenMapping", "group_name", "scopes_of", "table", "token_mapping"]
