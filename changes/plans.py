"""What a bulk change can do per zone: each plan is built from catalogue actions, so every item
passes the same gate, the same SDK client and lands in the same action record as a staff page.

- `dns.record.create`: add one record to every zone (look before writing: a record already there
  is "nothing to change").
- `dns.records.set_content`: in every zone, the records of a type whose name matches get a new
  content (a list, then an update per record that differs; each update reads before writing).
- `cache.purge`: purge every zone's cache (everything, or tags / prefixes / host names / URLs).

A plan's `preview` makes read-only calls only; its `run` is idempotent, so running an item again
after a crash or a lost answer verifies by reading and never applies anything twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator, model_validator

from clients.models import Zone
from operations.catalogue import action_get
from operations.executors import fqdn, same_content
from operations.gate import Actor, Refused, gate_check
from operations.inputs import (
    CachePurgeInput,
    DnsRecordCreateInput,
    RecordType,
    _Input,
    _record_name,
    check_record,
)
from operations.models import ActionRecord
from operations.services import action_preview, action_run

Outcome = ActionRecord.Outcome


class SetContentInput(_Input):
    """Records of this type and name (in every zone) get this content."""

    type: RecordType
    name: Annotated[str, Field(max_length=253, description="www, @ or a full name; the same in every zone")]
    content: Annotated[str, Field(min_length=1, max_length=2048)]

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _record_name(value)

    @model_validator(mode="after")
    def _by_type(self):
        check_record(type=self.type, content=self.content, proxied=False, priority=None)
        return self


@dataclass
class ItemOutcome:
    """One item's dry run or run, in the terms of `ChangeItem.Status`."""

    status: str
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    grant_id: int | None = None
    # Rate limited: try again after this many seconds (not blocked).
    retry_after: float | None = None
    # The grant itself failed (auth error, Cloudflare unavailable): stop its other items too.
    grant_failed: bool = False


AUTH_ERROR_WORDS = "Cloudflare refused the connection (it may have been revoked, or a permission removed)."
UNAVAILABLE_WORDS = "Cloudflare was unavailable; nothing was applied."


def outcome_of_record(record: ActionRecord, *, done_detail: dict[str, Any]) -> ItemOutcome:
    """Map an action record to an item outcome (run phase)."""
    grant_id = record.grant_id
    if record.outcome == Outcome.SUCCEEDED:
        changed = not (record.result.get("existed") or record.result.get("unchanged"))
        return ItemOutcome("done" if changed else "unchanged", "", done_detail, grant_id)
    if record.outcome == Outcome.REFUSED:
        return ItemOutcome("blocked", record.reason, {}, grant_id)
    if record.outcome == Outcome.AUTH_ERROR:
        return ItemOutcome("blocked", AUTH_ERROR_WORDS, {}, grant_id, grant_failed=True)
    if record.outcome == Outcome.UNAVAILABLE:
        retry_after = (record.result or {}).get("retry_after")
        if retry_after:
            return ItemOutcome("queued", "Rate limited at Cloudflare: waiting.", {}, grant_id, retry_after=retry_after)
        return ItemOutcome("blocked", UNAVAILABLE_WORDS, {}, grant_id, grant_failed=True)
    if record.outcome == Outcome.UNCERTAIN:
        # No answer: the write may or may not have been applied. The item runs again, and that run
        # reads before writing (the record there → "unchanged"; a purge is idempotent).
        return ItemOutcome("queued", "No answer from Cloudflare: verifying by reading.", {}, grant_id, retry_after=2)
    return ItemOutcome("failed", record.reason or record.get_outcome_display(), {}, grant_id)


def outcome_of_preview(preview) -> ItemOutcome:
    grant_id = preview.grant.pk if preview.grant is not None else None
    if preview.outcome == "ready":
        change = preview.change
        return ItemOutcome(
            "ready",
            change.note,
            {"changes": [{"before": change.before, "after": change.after}]},
            grant_id,
        )
    # "unchanged", "refused", "invalid" as they are; an error during the dry run refuses the zone.
    status = preview.outcome if preview.outcome in ("unchanged", "refused", "invalid") else "refused"
    return ItemOutcome(status, " ".join(preview.reasons), {}, grant_id)


@dataclass(frozen=True)
class Plan:
    id: str
    label: str
    # The catalogue actions an item runs (their scopes decide what the gate asks of each grant).
    actions: tuple[str, ...]
    inputs: type[BaseModel]
    preview: Callable[..., ItemOutcome]
    run: Callable[..., ItemOutcome]
    summarize: Callable[[dict[str, Any]], str]

    def summary(self, inputs: dict[str, Any]) -> str:
        try:
            return self.summarize(inputs)
        except (KeyError, TypeError):
            return self.label


# --- One catalogue action per zone ---------------------------------------------------------------


def _single_preview(action_id: str):
    def preview(*, actor: Actor, zone: Zone, inputs: dict[str, Any]) -> ItemOutcome:
        return outcome_of_preview(
            action_preview(actor=actor, action_id=action_id, client=zone.account.client, zone=zone, inputs=inputs)
        )

    return preview


def _single_run(action_id: str):
    def run(
        *, actor: Actor, zone: Zone, inputs: dict[str, Any], key: str, item_id: int, first_attempt: bool = False
    ) -> ItemOutcome:
        record = action_run(
            actor=actor,
            action_id=action_id,
            client=zone.account.client,
            zone=zone,
            inputs=inputs,
            idempotency_key=key,
            change_item_id=item_id,
            first_attempt=first_attempt,
        )
        detail = {"record_id": record.result.get("record_id")} if record.result.get("record_id") else {}
        if record.pk:
            detail["action_record_ids"] = [record.pk]
        return outcome_of_record(record, done_detail=detail)

    return run


# --- Records whose name matches get a new content ------------------------------------------------


def _matching(*, actor: Actor, zone: Zone, inputs: dict[str, Any]) -> tuple[list[dict[str, Any]], ItemOutcome | None]:
    """The records of this type and exact name in the zone (one read), or the outcome that stops."""
    client = zone.account.client
    # The gate for the write first: a grant without dns.write is refused before any read.
    try:
        gate_check(actor=actor, action=action_get("dns.record.update"), client=client, zone=zone)
    except Refused as exc:
        return [], ItemOutcome("refused", " ".join(exc.reasons), {}, exc.grant.pk if exc.grant else None)
    name = fqdn(inputs["name"], zone.name)
    listed = action_run(
        actor=actor,
        action_id="dns.records.list",
        client=client,
        zone=zone,
        inputs={"type": inputs["type"], "name": name, "per_page": 100},
    )
    if not listed.succeeded:
        return [], outcome_of_record(listed, done_detail={})
    records = [r for r in (listed.data or {}).get("records", []) if r["name"] == name and r["type"] == inputs["type"]]
    return records, None


def _set_content_preview(*, actor: Actor, zone: Zone, inputs: dict[str, Any]) -> ItemOutcome:
    records, stop = _matching(actor=actor, zone=zone, inputs=inputs)
    if stop is not None:
        return stop if stop.status in ("refused", "invalid") else ItemOutcome("refused", stop.reason)
    name = fqdn(inputs["name"], zone.name)
    if not records:
        return ItemOutcome("unchanged", f"No {inputs['type']} record named {name}: nothing to change.")
    changes = [
        {"before": r, "after": {**r, "content": inputs["content"]}}
        for r in records
        if not same_content(r["type"], r["content"], inputs["content"])
    ]
    if not changes:
        return ItemOutcome("unchanged", "The matching records already have this content: nothing to change.")
    return ItemOutcome(
        "ready", f"{len(changes)} of {len(records)} matching record(s) will change.", {"changes": changes}
    )


def _set_content_run(
    *, actor: Actor, zone: Zone, inputs: dict[str, Any], key: str, item_id: int, first_attempt: bool = False
) -> ItemOutcome:
    records, stop = _matching(actor=actor, zone=zone, inputs=inputs)
    if stop is not None:
        return ItemOutcome("blocked", stop.reason, grant_id=stop.grant_id) if stop.status == "refused" else stop
    changed_ids, record_ids, grant_id = [], [], None
    for record in records:
        if same_content(record["type"], record["content"], inputs["content"]):
            continue
        done = action_run(
            actor=actor,
            action_id="dns.record.update",
            client=zone.account.client,
            zone=zone,
            inputs={"record_id": record["id"], "content": inputs["content"]},
            idempotency_key=f"{key}-{record['id']}",
            change_item_id=item_id,
            first_attempt=first_attempt,
        )
        grant_id = done.grant_id
        outcome = outcome_of_record(done, done_detail={})
        if outcome.status not in ("done", "unchanged"):
            outcome.detail = {"record_ids": changed_ids}
            return outcome
        if outcome.status == "done":
            changed_ids.append(record["id"])
        if done.pk:
            record_ids.append(done.pk)
    detail = {"record_ids": changed_ids, "action_record_ids": record_ids}
    return ItemOutcome("done" if changed_ids else "unchanged", "", detail, grant_id)


def _describe_purge(inputs: dict[str, Any]) -> str:
    if inputs.get("mode") == "everything":
        return "Purge everything"
    return f"Purge {len(inputs.get('values') or [])} {inputs.get('mode')}"


_PLANS = (
    Plan(
        id="dns.record.create",
        label="Add a DNS record to every zone",
        actions=("dns.record.create",),
        inputs=DnsRecordCreateInput,
        preview=_single_preview("dns.record.create"),
        run=_single_run("dns.record.create"),
        summarize=lambda i: f"Add {i['type']} {i['name']} → {i['content']}",
    ),
    Plan(
        id="dns.records.set_content",
        label="Change the content of matching DNS records",
        actions=("dns.records.list", "dns.record.update"),
        inputs=SetContentInput,
        preview=_set_content_preview,
        run=_set_content_run,
        summarize=lambda i: f"Set {i['type']} {i['name']} → {i['content']}",
    ),
    Plan(
        id="cache.purge",
        label="Purge the cache of every zone",
        actions=("cache.purge",),
        inputs=CachePurgeInput,
        preview=_single_preview("cache.purge"),
        run=_single_run("cache.purge"),
        summarize=_describe_purge,
    ),
)

PLANS: Mapping[str, Plan] = MappingProxyType({plan.id: plan for plan in _PLANS})


class UnknownPlan(ValueError):
    pass


def plan_get(plan_id: str) -> Plan:
    try:
        return PLANS[plan_id]
    except KeyError:
        raise UnknownPlan(f"Unknown bulk change: {plan_id}") from None


__all__ = ["PLANS", "ItemOutcome", "Plan", "SetContentInput", "UnknownPlan", "plan_get"]
