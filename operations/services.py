"""Run an action: validate, pass the gate, call Cloudflare through the SDK, record the outcome."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from clients.models import Client, CloudflareAccount, Zone
from connections.models import Grant

from . import cloudflare_api
from .catalogue import Action, Target, UnknownAction, action_get
from .credentials import token_auth_error
from .executors import ActionResult, Change
from .gate import Actor, Permit, Refused, gate_check
from .inputs import ValidationError, input_errors
from .models import ActionReadCount, ActionRecord

logger = logging.getLogger(__name__)

Outcome = ActionRecord.Outcome


@dataclass(frozen=True)
class Preview:
    """A dry run: what the action would change (before → after), or why it would be refused."""

    action_id: str
    outcome: str  # "ready" | "unchanged" | "refused" | "invalid" | an error outcome of ActionRecord
    reasons: list[str]
    change: Change | None = None
    missing_scopes: frozenset[str] = frozenset()
    grant: Grant | None = None

    @property
    def ready(self) -> bool:
        return self.outcome in ("ready", "unchanged")


def _target(permit: Permit, action: Action):
    return {Target.ZONE: permit.zone, Target.ACCOUNT: permit.account, Target.GRANT: permit.grant}[action.target]


def _with_token(grant: Grant) -> Grant:
    # The gate deferred the token columns; load the access token only now, for this one call.
    return Grant.objects.only("id", "cf_user_id", "access_token").get(pk=grant.pk)


def _api_for(permit: Permit):
    """The SDK client for the permit's credential: the grant's access token, or before cutover the
    client's API token (read from its encrypted column only now, for this one call)."""
    if permit.token is not None:
        return cloudflare_api.api_for_token(token=permit.token.load_secret(), user_key=permit.token.user_key)
    return cloudflare_api.api_for_grant(grant=_with_token(permit.grant))


def _credential_evidence(permit: Permit) -> None:
    if permit.token is not None:
        token_auth_error(permit.token.token_id)
    else:
        _auth_error_evidence(permit.grant)


def _error_outcome(error: cloudflare_api.CloudflareError) -> str:
    if cloudflare_api.is_auth_error(error):
        return Outcome.AUTH_ERROR
    if isinstance(error, cloudflare_api.UncertainOutcome):
        return Outcome.UNCERTAIN
    if isinstance(error, cloudflare_api.TransientError):
        return Outcome.UNAVAILABLE
    return Outcome.FAILED


def _error_detail(error: cloudflare_api.CloudflareError) -> tuple[list[int], list[str]]:
    errors = getattr(error, "errors", None) or []
    codes = [e["code"] for e in errors if e.get("code") is not None] or list(getattr(error, "codes", []) or [])
    messages = [e["message"] for e in errors if e.get("message")]
    return codes, messages


def _auth_error_evidence(grant: Grant) -> None:
    """9109 / 10000 during an action: the token may be revoked or a permission withdrawn.

    Neither is proven by this answer alone, so the grant is not marked revoked here; its health
    check is made due now, and the check (which can tell the two apart) decides.
    """
    from connections.services.dispatch import enqueue_each
    from connections.tasks import check_grant_task

    Grant.objects.filter(pk=grant.pk).update(next_check_at=timezone.now())
    # If the broker is down the beat sweep still finds the grant: it is due now.
    transaction.on_commit(lambda: enqueue_each(check_grant_task, [grant.pk]))


def _count_read(*, actor: Actor, permit: Permit, action: Action) -> None:
    keys = {
        "day": timezone.localdate(),
        "grant": permit.grant,
        "action_id": action.id,
        "actor": actor.user,
        "actor_via": actor.via,
    }
    if ActionReadCount.objects.filter(**keys).update(count=F("count") + 1):
        return
    try:
        with transaction.atomic():
            ActionReadCount.objects.create(client=permit.client, count=1, **keys)
    except IntegrityError:  # another request created today's row first
        ActionReadCount.objects.filter(**keys).update(count=F("count") + 1)


def _safe_inputs(data: Any) -> dict[str, Any]:
    # Inputs never hold a secret (DNS records and purge lists); keep them bounded all the same.
    return data if isinstance(data, dict) and len(repr(data)) < 20_000 else {"note": "inputs too large to keep"}


def action_run(
    *,
    actor: Actor,
    action_id: str,
    client: Client,
    zone: Zone | None = None,
    account: CloudflareAccount | None = None,
    inputs: dict[str, Any],
    idempotency_key: str = "",
    change_item_id: int | None = None,
    first_attempt: bool = False,
) -> ActionRecord:
    """Validate inputs, pass the gate, run the executor through the SDK client, record the outcome.

    Never raises for an expected failure: the returned record's `outcome` says what happened.

    1. Unknown action or invalid input: recorded as `invalid`; zero calls.
    2. Gate refusal: recorded as `refused` with the reasons; zero calls.
    3. With an `idempotency_key` already recorded as succeeded: that record is returned; zero calls.
       (`first_attempt=True` says no earlier run can exist, and skips that lookup.)
    4. The executor runs outside any transaction (no database lock is held across HTTP).
    5. The outcome is recorded. A successful read is counted, not stored: the returned record is
       then unsaved (`pk is None`) and carries the read's data in `record.data`.
       A 9109 / 10000 makes the grant's health check due now (evidence, never "revoked").
    """
    started = time.monotonic()
    record = ActionRecord(
        actor=actor.user,
        actor_via=actor.via,
        actor_label=actor.label,
        client=client,
        zone=zone,
        zone_name=zone.name if zone else "",
        account=account or (zone.account if zone else None),
        action_id=action_id,
        kind="read",
        inputs=_safe_inputs(inputs),
        change_item_id=change_item_id,
        idempotency_key=idempotency_key,
    )
    record.data = None

    def finish(outcome: str, reason: str = "", **fields: Any) -> ActionRecord:
        record.outcome = outcome
        record.reason = reason[:1000]
        record.duration_ms = int((time.monotonic() - started) * 1000)
        for key, value in fields.items():
            setattr(record, key, value)
        record.save()
        return record

    # 1. The action and its inputs.
    try:
        action = action_get(action_id)
    except UnknownAction as exc:
        return finish(Outcome.INVALID, str(exc), kind="read")
    record.kind = str(action.kind)
    try:
        validated = action.inputs.model_validate(inputs)
    except ValidationError as exc:
        return finish(Outcome.INVALID, " ".join(input_errors(exc)))
    record.inputs = validated.model_dump(mode="json")

    # 2. The gate (database only).
    try:
        permit = gate_check(actor=actor, action=action, client=client, zone=zone, account=account)
    except Refused as exc:
        return finish(
            Outcome.INVALID if exc.code == "invalid_input" else Outcome.REFUSED,
            " ".join(exc.reasons),
            grant=exc.grant,
            result={"code": exc.code, "missing_scopes": sorted(exc.missing_scopes)},
        )
    record.grant = permit.grant
    record.account = permit.account
    if permit.token is not None:
        record.credential = ActionRecord.Credential.API_TOKEN
        record.api_token_id = permit.token.token_id
        record.credential_label = permit.token.label
    else:
        record.cf_user_id = permit.grant.cf_user_id

    # 3. A retry of something already done.
    if idempotency_key and not first_attempt:
        done = ActionRecord.objects.filter(idempotency_key=idempotency_key, outcome=Outcome.SUCCEEDED).first()
        if done is not None:
            return done

    # 4. One executor run, outside any transaction.
    try:
        with _api_for(permit) as api:
            result: ActionResult = action.execute(api, _target(permit, action), validated)
    except cloudflare_api.CloudflareError as error:
        outcome = _error_outcome(error)
        codes, messages = _error_detail(error)
        if outcome == Outcome.AUTH_ERROR:
            _credential_evidence(permit)
        return finish(
            outcome,
            str(error),
            error_codes=codes,
            error_messages=messages,
            result={"retry_after": error.retry_after} if error.retry_after else {},
        )

    # 5. Record (or count) the success.
    record.outcome = Outcome.SUCCEEDED
    record.result = result.summary
    record.data = result.data
    record.duration_ms = int((time.monotonic() - started) * 1000)
    if action.is_read:
        # Reads with an API token (before cutover) are not counted: the count is kept per grant.
        if permit.grant is not None:
            _count_read(actor=actor, permit=permit, action=action)
        return record
    record.save()
    return record


def action_preview(
    *,
    actor: Actor,
    action_id: str,
    client: Client,
    zone: Zone | None = None,
    account: CloudflareAccount | None = None,
    inputs: dict[str, Any],
) -> Preview:
    """Gate + validation + read-only calls only: what would change (before → after), or why not.

    Nothing is recorded: a dry run changes nothing, and the real run records itself.
    """
    try:
        action = action_get(action_id)
        validated = action.inputs.model_validate(inputs)
    except UnknownAction as exc:
        return Preview(action_id=action_id, outcome="invalid", reasons=[str(exc)])
    except ValidationError as exc:
        return Preview(action_id=action_id, outcome="invalid", reasons=input_errors(exc))
    try:
        permit = gate_check(actor=actor, action=action, client=client, zone=zone, account=account)
    except Refused as exc:
        outcome = "invalid" if exc.code == "invalid_input" else "refused"
        return Preview(action_id, outcome, exc.reasons, missing_scopes=exc.missing_scopes, grant=exc.grant)
    if action.preview is None:
        return Preview(action_id, "unchanged", ["A read changes nothing."], grant=permit.grant)
    try:
        with _api_for(permit) as api:
            change = action.preview(api, _target(permit, action), validated)
    except cloudflare_api.CloudflareError as error:
        outcome = _error_outcome(error)
        if outcome == Outcome.AUTH_ERROR:
            _credential_evidence(permit)
        return Preview(action_id, str(outcome), [str(error)], grant=permit.grant)
    return Preview(
        action_id, "ready" if change.changes else "unchanged", [change.note], change=change, grant=permit.grant
    )
