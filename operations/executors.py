"""What each catalogue action does at Cloudflare, through the SDK client of `cloudflare_api`.

Each executor takes `(api, target, inputs)`: the SDK client (acting with the grant's token), the
zone / account / grant it acts on, and the validated input model. It returns an `ActionResult`
and raises `cloudflare_api`'s error classes; the service records the outcome.

Writes are idempotent, so a retry after a crash or a lost answer never applies anything twice:

- create looks before writing: a record with the same type, name and content already there is
  the result (`existed`), nothing is written;
- update reads the record and writes only the fields that differ (before → after kept);
- delete of a record already gone succeeds (`already_gone`);
- a cache purge is idempotent by nature.

Each write also has a preview that makes read-only calls only: what would change, before → after.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from . import cloudflare_api
from .inputs import (
    CachePurgeInput,
    DnsRecordCreateInput,
    DnsRecordDeleteInput,
    DnsRecordsListInput,
    DnsRecordUpdateInput,
    NoInput,
    Page,
    ZoneSettingsReadInput,
    ZonesListInput,
    check_record,
)

# Cloudflare's answer to creating a record identical to one already there.
IDENTICAL_RECORD_CODE = 81058
RECORD_FIELDS = ("id", "type", "name", "content", "ttl", "proxied", "priority", "comment")
COMPARED_FIELDS = ("type", "name", "content", "ttl", "proxied", "priority", "comment")


@dataclass
class ActionResult:
    """What an action returned. `summary` is small and JSON-safe: it is stored on the action record
    (record id, before → after, existed / already gone). `data` is what a read returns (records,
    zones ...): shown, never stored."""

    summary: dict[str, Any] = field(default_factory=dict)
    data: Any = None


@dataclass(frozen=True)
class Change:
    """A preview: what the action would do, from read-only calls. `before`/`after` are records."""

    changes: bool
    note: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


def record_view(record: Any) -> dict[str, Any]:
    """The fields of a DNS record the portal shows and compares (SDK model or dict)."""
    data = record.to_dict() if hasattr(record, "to_dict") else dict(record)
    view = {key: data.get(key) for key in RECORD_FIELDS}
    view["comment"] = view["comment"] or ""
    view["proxied"] = bool(view["proxied"])
    if view["type"] != "MX":
        view["priority"] = None
    return view


def fqdn(name: str, zone_name: str) -> str:
    """`www`, `@`, `www.example.com` → the full record name under the zone."""
    name = name.lower().rstrip(".")
    zone_name = zone_name.lower()
    if name == "@" or name == zone_name:
        return zone_name
    if name.endswith("." + zone_name):
        return name
    return f"{name}.{zone_name}"


def same_content(record_type: str, a: str, b: str) -> bool:
    """Cloudflare normalises some contents (IPv6 compression, host name case): compare like it."""
    if record_type in ("A", "AAAA"):
        try:
            return ipaddress.ip_address(a) == ipaddress.ip_address(b)
        except ValueError:
            return a == b
    if record_type in ("CNAME", "MX", "NS"):
        return a.lower().rstrip(".") == b.lower().rstrip(".")
    return a == b


def _call(api, user_key: str, method: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - classify() re-raises anything that is not Cloudflare's
        raise cloudflare_api.classify(exc, user_key=user_key, method=method) from exc


def _user(api) -> str:
    return getattr(api, "_agency_user_key", "")


def _page(result: Any) -> dict[str, Any]:
    info = result.result_info.to_dict() if getattr(result, "result_info", None) is not None else {}
    return {
        "page": int(info.get("page") or 1),
        "per_page": int(info.get("per_page") or 0),
        "total_count": int(info.get("total_count") or 0),
        "total_pages": int(info.get("total_pages") or 1),
    }


# --- Reads ---------------------------------------------------------------------------------------


def user_read(api, grant, inputs: NoInput) -> ActionResult:
    user = _call(api, _user(api), "GET", api.user.get)
    data = user.to_dict() if hasattr(user, "to_dict") else dict(user or {})
    view = {k: data.get(k) for k in ("id", "email", "first_name", "last_name")}
    return ActionResult(summary={"user_id": view["id"]}, data=view)


def accounts_list(api, grant, inputs: Page) -> ActionResult:
    result = _call(api, _user(api), "GET", api.accounts.list, page=inputs.page, per_page=inputs.per_page)
    rows = [{"id": a.id, "name": a.name} for a in result.result]
    return ActionResult(summary={"count": len(rows)}, data={"accounts": rows, **_page(result)})


def zones_list(api, account, inputs: ZonesListInput) -> ActionResult:
    params: dict[str, Any] = {
        "account": {"id": account.cf_account_id},
        "page": inputs.page,
        "per_page": inputs.per_page,
    }
    if inputs.name:
        params["name"] = inputs.name
    result = _call(api, _user(api), "GET", api.zones.list, **params)
    rows = [{"id": z.id, "name": z.name, "status": z.status} for z in result.result]
    return ActionResult(summary={"count": len(rows)}, data={"zones": rows, **_page(result)})


def dns_records_list(api, zone, inputs: DnsRecordsListInput) -> ActionResult:
    params: dict[str, Any] = {"zone_id": zone.cf_zone_id, "page": inputs.page, "per_page": inputs.per_page}
    if inputs.type:
        params["type"] = inputs.type
    if inputs.name:
        params["name"] = {"contains": inputs.name.lower()}
    params["order"], params["direction"] = "name", "asc"
    result = _call(api, _user(api), "GET", api.dns.records.list, **params)
    rows = [record_view(r) for r in result.result]
    return ActionResult(summary={"count": len(rows)}, data={"records": rows, **_page(result)})


def zone_settings_read(api, zone, inputs: ZoneSettingsReadInput) -> ActionResult:
    if inputs.setting:
        setting = _call(api, _user(api), "GET", api.zones.settings.get, inputs.setting, zone_id=zone.cf_zone_id)
        data = setting.to_dict() if hasattr(setting, "to_dict") else setting
        rows = [{"id": data.get("id"), "value": data.get("value")}] if isinstance(data, dict) else []
    else:
        # No SDK call lists every setting of a zone: the generic GET on the documented path.
        envelope = _call(api, _user(api), "GET", api.get, f"/zones/{zone.cf_zone_id}/settings", cast_to=object)
        items = envelope.get("result") if isinstance(envelope, dict) else envelope
        rows = [{"id": s.get("id"), "value": s.get("value")} for s in items or [] if isinstance(s, dict)]
    return ActionResult(summary={"count": len(rows)}, data={"settings": rows})


# --- DNS writes ----------------------------------------------------------------------------------


def _find_same(api, zone, *, record_type: str, name: str, content: str) -> dict[str, Any] | None:
    """A record with this type, name and content, if there is one (one read)."""
    result = _call(
        api,
        _user(api),
        "GET",
        api.dns.records.list,
        zone_id=zone.cf_zone_id,
        type=record_type,
        name={"exact": name},
        per_page=100,
    )
    for record in result.result:
        view = record_view(record)
        if view["type"] == record_type and view["name"] == name and same_content(record_type, view["content"], content):
            return view
    return None


def _new_record(zone, inputs: DnsRecordCreateInput) -> dict[str, Any]:
    return {
        "type": inputs.type,
        "name": fqdn(inputs.name, zone.name),
        "content": inputs.content,
        "ttl": inputs.ttl,
        "proxied": inputs.proxied,
        "priority": inputs.priority if inputs.type == "MX" else None,
        "comment": inputs.comment,
    }


def _sdk_fields(record: dict[str, Any]) -> dict[str, Any]:
    fields = {k: record[k] for k in ("type", "name", "content", "ttl", "proxied")}
    if record.get("comment"):
        fields["comment"] = record["comment"]
    if record["type"] == "MX":
        fields["priority"] = record["priority"]
    return fields


def dns_record_create_preview(api, zone, inputs: DnsRecordCreateInput) -> Change:
    new = _new_record(zone, inputs)
    existing = _find_same(api, zone, record_type=new["type"], name=new["name"], content=new["content"])
    if existing:
        return Change(
            changes=False, note="This record already exists: nothing to add.", before=existing, after=existing
        )
    return Change(changes=True, note="A new record will be added.", before=None, after=new)


def dns_record_create(api, zone, inputs: DnsRecordCreateInput) -> ActionResult:
    new = _new_record(zone, inputs)
    # Look before writing: after a lost answer or a crash the record may already be there.
    existing = _find_same(api, zone, record_type=new["type"], name=new["name"], content=new["content"])
    if existing:
        return ActionResult(summary={"record_id": existing["id"], "existed": True, "after": existing})
    try:
        created = _call(api, _user(api), "POST", api.dns.records.create, zone_id=zone.cf_zone_id, **_sdk_fields(new))
    except cloudflare_api.CloudflareApiError as exc:
        # "An identical record already exists": a write we could not see when we looked (an earlier
        # request still landing, or someone else's) made it. Read it back instead of failing.
        if IDENTICAL_RECORD_CODE not in {e.get("code") for e in exc.errors or []}:
            raise
        existing = _find_same(api, zone, record_type=new["type"], name=new["name"], content=new["content"])
        if existing is None:
            raise
        return ActionResult(summary={"record_id": existing["id"], "existed": True, "after": existing})
    view = record_view(created)
    return ActionResult(summary={"record_id": view["id"], "existed": False, "after": view})


def _get_record(api, zone, record_id: str) -> dict[str, Any] | None:
    try:
        record = _call(api, _user(api), "GET", api.dns.records.get, record_id, zone_id=zone.cf_zone_id)
    except cloudflare_api.CloudflareApiError as exc:
        if exc.is_not_found:
            return None
        raise
    return record_view(record)


class RecordGone(cloudflare_api.CloudflareApiError):
    def __init__(self, record_id: str) -> None:
        super().__init__(
            "That DNS record does not exist (any more).",
            status=404,
            errors=[{"code": 81044, "message": "Record does not exist."}],
        )
        self.record_id = record_id


class MergedRecordInvalid(cloudflare_api.CloudflareApiError):
    """The change would make the record invalid (found after reading it, so not an input error)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=400, errors=[{"code": None, "message": message}])


def _merged(zone, before: dict[str, Any], inputs: DnsRecordUpdateInput) -> dict[str, Any]:
    after = {k: before[k] for k in COMPARED_FIELDS}
    after.update(inputs.changes())
    after["name"] = fqdn(after["name"], zone.name)
    if after["type"] != "MX":
        after["priority"] = None
    try:
        check_record(type=after["type"], content=after["content"], proxied=after["proxied"], priority=after["priority"])
    except ValueError as exc:
        raise MergedRecordInvalid(str(exc)) from None
    return after


def _differs(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    changed = []
    for key in COMPARED_FIELDS:
        if key == "content":
            same = before["type"] == after["type"] and same_content(
                after["type"], before["content"] or "", after["content"] or ""
            )
        else:
            same = before.get(key) == after.get(key)
        if not same:
            changed.append(key)
    return changed


def dns_record_update_preview(api, zone, inputs: DnsRecordUpdateInput) -> Change:
    before = _get_record(api, zone, inputs.record_id)
    if before is None:
        raise RecordGone(inputs.record_id)
    after = {**_merged(zone, before, inputs), "id": before["id"]}
    changed = _differs(before, after)
    if not changed:
        return Change(
            changes=False, note="The record already has these values: nothing to change.", before=before, after=before
        )
    return Change(changes=True, note=f"Changes: {', '.join(changed)}.", before=before, after=after)


def dns_record_update(api, zone, inputs: DnsRecordUpdateInput) -> ActionResult:
    # Read first and write only what differs: a retried update is then a no-op.
    before = _get_record(api, zone, inputs.record_id)
    if before is None:
        raise RecordGone(inputs.record_id)
    after = _merged(zone, before, inputs)
    changed = _differs(before, after)
    if not changed:
        return ActionResult(summary={"record_id": before["id"], "unchanged": True, "before": before, "after": before})
    updated = _call(
        api, _user(api), "PATCH", api.dns.records.edit, before["id"], zone_id=zone.cf_zone_id, **_sdk_fields(after)
    )
    view = record_view(updated)
    return ActionResult(summary={"record_id": view["id"], "changed": changed, "before": before, "after": view})


def dns_record_delete_preview(api, zone, inputs: DnsRecordDeleteInput) -> Change:
    before = _get_record(api, zone, inputs.record_id)
    if before is None:
        return Change(changes=False, note="This record is already gone: nothing to remove.")
    return Change(changes=True, note="This record will be removed.", before=before, after=None)


def dns_record_delete(api, zone, inputs: DnsRecordDeleteInput) -> ActionResult:
    # Read first: the record says what was removed (for the client's page), and a record already
    # gone is a success, so a retried delete changes nothing.
    before = _get_record(api, zone, inputs.record_id)
    if before is None:
        return ActionResult(summary={"record_id": inputs.record_id, "already_gone": True})
    try:
        _call(api, _user(api), "DELETE", api.dns.records.delete, before["id"], zone_id=zone.cf_zone_id)
    except cloudflare_api.CloudflareApiError as exc:
        if not exc.is_not_found:
            raise
        return ActionResult(summary={"record_id": before["id"], "already_gone": True, "before": before})
    return ActionResult(summary={"record_id": before["id"], "already_gone": False, "before": before})


# --- Cache ---------------------------------------------------------------------------------------


def cache_purge_preview(api, zone, inputs: CachePurgeInput) -> Change:
    what = "everything" if inputs.mode == "everything" else f"{len(inputs.values)} {inputs.mode}"
    return Change(changes=True, note=f"Cloudflare's cache for {zone.name} will be cleared: {what}.")


def cache_purge(api, zone, inputs: CachePurgeInput) -> ActionResult:
    _call(api, _user(api), "POST", api.cache.purge, zone_id=zone.cf_zone_id, **inputs.sdk_arguments())
    return ActionResult(summary={"mode": inputs.mode, "count": len(inputs.values)})
