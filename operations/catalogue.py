"""The catalogue: every action the agency may run in a client's Cloudflare account, declared once.

Each action says what it needs (Cloudflare OAuth scopes), what it is (read / write / destructive),
what it acts on (a zone, an account, or the grant's user), what it takes (a pydantic input model,
validated before any call) and what it does (its executor, with a read-only preview for writes).
Everything that tells people what the agency can do reads from here: the pre-consent page, the
grant page, the client's portal page, the scope audit of each OAuth app, and later the MCP tool
list. A new action is one entry below; nothing else lists actions.

Why a separate app (`operations/`) rather than a package in `connections/`: connections obtains
and keeps grants alive; operations *uses* them. Keeping the dependency one way (operations imports
connections, never the reverse) keeps the consent and refresh code free of action concerns, and
bulk changes (`changes/`) build on operations alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from pydantic import BaseModel

from . import executors as ex
from . import inputs as inp


class Kind(StrEnum):
    READ = "read"
    WRITE = "write"
    DESTRUCTIVE = "destructive"


class Target(StrEnum):
    ZONE = "zone"
    ACCOUNT = "account"
    GRANT = "grant"  # the Cloudflare user behind the grant


KIND_LABELS = {Kind.READ: "Read", Kind.WRITE: "Change", Kind.DESTRUCTIVE: "Remove"}


class UnknownAction(ValueError):
    def __init__(self, action_id: str) -> None:
        super().__init__(f"There is no action {action_id!r}. Known actions: {', '.join(sorted(CATALOGUE))}.")
        self.action_id = action_id


@dataclass(frozen=True)
class Action:
    id: str
    staff_label: str
    client_label: str  # lazily translated: read in the reader's language
    scopes: frozenset[str]
    kind: Kind
    target: Target
    inputs: type[BaseModel]
    execute: Callable[..., ex.ActionResult]
    # Read-only calls only: what the action would change (None for reads: they change nothing).
    preview: Callable[..., ex.Change] | None = None
    # One sentence for the client's portal page, from the stored inputs and result summary.
    describe: Callable[[dict[str, Any], dict[str, Any], str], str] | None = None

    @property
    def is_read(self) -> bool:
        return self.kind == Kind.READ

    def sentence(self, *, inputs: dict[str, Any], result: dict[str, Any], zone_name: str = "") -> str:
        if self.describe is None:
            return str(self.client_label)
        try:
            return self.describe(inputs, result, zone_name)
        except (KeyError, TypeError):  # an old record with a different shape: say it plainly
            return str(self.client_label)


def _record_words(record: dict[str, Any] | None, fallback: dict[str, Any]) -> str:
    record = record or fallback
    name = record.get("name") or fallback.get("name") or gettext("a record")
    return (
        gettext("%(type)s record %(name)s → %(content)s")
        % {
            "type": record.get("type") or fallback.get("type") or "",
            "name": name,
            "content": record.get("content") or "",
        }
    ).strip()


def _describe_create(inputs: dict, result: dict, zone: str) -> str:
    record = _record_words(result.get("after"), inputs)
    if result.get("existed"):  # an identical record was there: nothing was added, say so
        return gettext("The DNS %(record)s was already there: nothing added") % {"record": record}
    return gettext("Added the DNS %(record)s") % {"record": record}


def _describe_update(inputs: dict, result: dict, zone: str) -> str:
    before, after = result.get("before") or {}, result.get("after") or {}
    words = {"type": after.get("type", ""), "name": after.get("name", "")}
    if before.get("content") != after.get("content"):
        return gettext("Changed the DNS %(type)s record %(name)s: %(before)s → %(after)s") % {
            **words,
            "before": before.get("content"),
            "after": after.get("content"),
        }
    fields = ", ".join(result.get("changed") or []) or gettext("settings")
    return gettext("Changed the DNS %(type)s record %(name)s (%(fields)s)") % {**words, "fields": fields}


def _describe_delete(inputs: dict, result: dict, zone: str) -> str:
    return gettext("Removed the DNS %(record)s") % {
        "record": _record_words(result.get("before"), {"name": inputs.get("record_id")})
    }


def _describe_purge(inputs: dict, result: dict, zone: str) -> str:
    if inputs.get("mode") == "everything":
        return gettext("Cleared Cloudflare's whole cache for %(zone)s") % {"zone": zone}
    return gettext("Cleared Cloudflare's cache for %(zone)s: %(count)s %(mode)s") % {
        "zone": zone,
        "count": len(inputs.get("values") or []),
        "mode": inputs.get("mode"),
    }


_ACTIONS = (
    Action(
        id="user.read",
        staff_label="Read the Cloudflare user's profile",
        client_label=_("See your Cloudflare user profile (name and email address)"),
        scopes=frozenset({"user-details.read"}),
        kind=Kind.READ,
        target=Target.GRANT,
        inputs=inp.NoInput,
        execute=ex.user_read,
    ),
    Action(
        id="accounts.list",
        staff_label="List the Cloudflare accounts reached",
        client_label=_("See the names of the Cloudflare accounts you chose"),
        scopes=frozenset({"account-settings.read"}),
        kind=Kind.READ,
        target=Target.GRANT,
        inputs=inp.Page,
        execute=ex.accounts_list,
    ),
    Action(
        id="zones.list",
        staff_label="List an account's zones",
        client_label=_("See your zones (domains) and their status"),
        scopes=frozenset({"zone.read"}),
        kind=Kind.READ,
        target=Target.ACCOUNT,
        inputs=inp.ZonesListInput,
        execute=ex.zones_list,
    ),
    Action(
        id="dns.records.list",
        staff_label="List a zone's DNS records",
        client_label=_("See the DNS records of your zones"),
        scopes=frozenset({"dns.read"}),
        kind=Kind.READ,
        target=Target.ZONE,
        inputs=inp.DnsRecordsListInput,
        execute=ex.dns_records_list,
    ),
    Action(
        id="zone.settings.read",
        staff_label="Read a zone's settings",
        client_label=_("See zone settings such as SSL mode, caching level and security level"),
        scopes=frozenset({"zone-settings.read"}),
        kind=Kind.READ,
        target=Target.ZONE,
        inputs=inp.ZoneSettingsReadInput,
        execute=ex.zone_settings_read,
    ),
    Action(
        id="dns.record.create",
        staff_label="Add a DNS record",
        client_label=_("Add DNS records to your zones"),
        # Cloudflare checks the write scope only; the look-before-write read needs dns.read too.
        scopes=frozenset({"dns.read", "dns.write"}),
        kind=Kind.WRITE,
        target=Target.ZONE,
        inputs=inp.DnsRecordCreateInput,
        execute=ex.dns_record_create,
        preview=ex.dns_record_create_preview,
        describe=_describe_create,
    ),
    Action(
        id="dns.record.update",
        staff_label="Change a DNS record",
        client_label=_("Change DNS records in your zones"),
        scopes=frozenset({"dns.read", "dns.write"}),
        kind=Kind.WRITE,
        target=Target.ZONE,
        inputs=inp.DnsRecordUpdateInput,
        execute=ex.dns_record_update,
        preview=ex.dns_record_update_preview,
        describe=_describe_update,
    ),
    Action(
        id="dns.record.delete",
        staff_label="Delete a DNS record",
        client_label=_("Remove DNS records from your zones"),
        scopes=frozenset({"dns.read", "dns.write"}),
        kind=Kind.DESTRUCTIVE,
        target=Target.ZONE,
        inputs=inp.DnsRecordDeleteInput,
        execute=ex.dns_record_delete,
        preview=ex.dns_record_delete_preview,
        describe=_describe_delete,
    ),
    Action(
        id="cache.purge",
        staff_label="Purge the cache",
        client_label=_("Clear Cloudflare's cache for your sites, so visitors see fresh content"),
        scopes=frozenset({"cache.purge"}),
        kind=Kind.WRITE,
        target=Target.ZONE,
        inputs=inp.CachePurgeInput,
        execute=ex.cache_purge,
        preview=ex.cache_purge_preview,
        describe=_describe_purge,
    ),
)

CATALOGUE: Mapping[str, Action] = MappingProxyType({action.id: action for action in _ACTIONS})

# Scopes that no action uses but that are never "unused": offline_access asks for the refresh token.
SCOPES_WITHOUT_ACTIONS = frozenset({"offline_access"})


def action_get(action_id: str) -> Action:
    try:
        return CATALOGUE[action_id]
    except KeyError:
        raise UnknownAction(action_id) from None


def actions_for_scopes(scopes: Iterable[str]) -> tuple[list[Action], list[tuple[Action, frozenset[str]]]]:
    """(allowed, refused with the scopes each one misses), in catalogue order."""
    held = frozenset(scopes)
    allowed: list[Action] = []
    refused: list[tuple[Action, frozenset[str]]] = []
    for action in CATALOGUE.values():
        missing = action.scopes - held
        if missing:
            refused.append((action, missing))
        else:
            allowed.append(action)
    return allowed, refused


def scopes_used() -> frozenset[str]:
    """Every scope some action needs."""
    return frozenset().union(*(a.scopes for a in CATALOGUE.values()))


def unused_scopes(requested: Iterable[str]) -> list[str]:
    """Scopes an app requests that no catalogue action needs (the scope audit)."""
    used = scopes_used() | SCOPES_WITHOUT_ACTIONS
    return [s for s in dict.fromkeys(requested) if s not in used]
