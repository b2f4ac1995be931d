"""Bulk changes: create (with a dry run on the workers), confirm, run item by item, resume.

Every item runs through its plan, which runs catalogue actions through `action_run` (gate,
budgets, SDK client, action record). What this module adds is the bookkeeping that makes a change
over hundreds of zones safe:

- **Single-flight items.** An item is claimed by a compare-and-set (`queued`, or `running` with an
  expired lease → `running` with a new lease). A duplicate message, a second worker or a sweep
  racing a slow worker claims nothing.
- **Exactly once.** Every write carries an idempotency key derived from the item, and every plan
  reads before it writes: an item that ran before (a SIGKILLed worker, a lost answer) finds its
  record at Cloudflare and writes nothing the second time.
- **Blocked, not failed.** When a connection is revoked, loses a permission or Cloudflare is
  unavailable, the item is `blocked` with the reason and the other queued items of the same grant
  are blocked with it (no more calls with a token Cloudflare refuses); other grants' items go on.
  Resume queues the blocked items again, and only those.
- **Nothing lost.** Items waiting in the broker are in the database first: the sweep re-dispatches
  queued items whose message is late and running items whose lease expired.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from clients.models import Zone
from connections.services.dispatch import enqueue_each
from operations.gate import Actor
from operations.inputs import ValidationError, input_errors

from .models import Change, ChangeItem
from .plans import ItemOutcome, UnknownPlan, plan_get

logger = logging.getLogger(__name__)

Status = ChangeItem.Status
OPEN_STATUSES = (Status.PENDING, Status.QUEUED, Status.RUNNING)


class ChangeInputError(ValueError):
    """The change cannot be created: nothing was written and nothing was sent to Cloudflare."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _item_tasks():
    from . import tasks

    return tasks


def _actor(change: Change, *, confirmed: bool) -> Actor:
    user = change.confirmed_by if confirmed else change.created_by
    return Actor(user=user, via="bulk", label=f"bulk change #{change.pk}")


# --- Create and dry run --------------------------------------------------------------------------


def change_create(*, user, plan_id: str, inputs: dict[str, Any], zones: Iterable[Zone]) -> Change:
    """Validate, then create the change and one item per zone, and queue every item's dry run.

    Bad input raises `ChangeInputError` before anything is written.
    """
    try:
        plan = plan_get(plan_id)
    except UnknownPlan as exc:
        raise ChangeInputError([str(exc)]) from None
    try:
        validated = plan.inputs.model_validate(inputs)
    except ValidationError as exc:
        raise ChangeInputError(input_errors(exc)) from None
    zones = list({z.pk: z for z in zones}.values())
    if not zones:
        raise ChangeInputError(["Pick at least one zone."])
    limit = settings.CHANGE_MAX_ZONES
    if len(zones) > limit:
        raise ChangeInputError([f"A bulk change covers at most {limit} zones; {len(zones)} were picked."])
    with transaction.atomic():
        change = Change.objects.create(plan=plan.id, inputs=validated.model_dump(mode="json"), created_by=user)
        items = ChangeItem.objects.bulk_create(
            [
                ChangeItem(
                    change=change, client_id=z.account.client_id, zone=z, zone_name=z.name, dispatched_at=timezone.now()
                )
                for z in sorted(zones, key=lambda z: z.name)
            ],
            batch_size=500,
        )
        ids = [i.pk for i in items]
        transaction.on_commit(lambda: enqueue_each(_item_tasks().change_item_preview_task, ids))
    logger.info("bulk change %s created: plan=%s zones=%s", change.pk, plan.id, len(ids))
    return change


def _save_outcome(item_id: int, outcome: ItemOutcome, *, field: str, **extra: Any) -> None:
    ChangeItem.objects.filter(pk=item_id).update(
        status=outcome.status,
        reason=outcome.reason[:1000],
        grant_id=outcome.grant_id,
        **{field: outcome.detail},
        **extra,
    )


def change_item_preview(*, item_id: int) -> None:
    """The dry run of one item (read-only calls only)."""
    item = (
        ChangeItem.objects.select_related("change", "zone__account__client")
        .filter(pk=item_id, status=Status.PENDING, change__status=Change.Status.PREVIEWING)
        .first()
    )
    if item is None:
        return
    plan = plan_get(item.change.plan)
    outcome = plan.preview(actor=_actor(item.change, confirmed=False), zone=item.zone, inputs=item.change.inputs)
    if outcome.status == "queued":  # rate limited or no answer during a dry run: say so, do not run
        outcome = ItemOutcome("refused", outcome.reason, grant_id=outcome.grant_id)
    _save_outcome(item_id, outcome, field="preview")
    _finish_phase(item.change_id)


def _finish_phase(change_id: int) -> None:
    """Close the dry run or the run when no item is open any more (a compare-and-set each)."""
    if ChangeItem.objects.filter(change_id=change_id, status__in=OPEN_STATUSES).exists():
        return
    now = timezone.now()
    Change.objects.filter(pk=change_id, status=Change.Status.PREVIEWING).update(status=Change.Status.PREVIEWED)
    if Change.objects.filter(pk=change_id, status=Change.Status.RUNNING).update(
        status=Change.Status.FINISHED, finished_at=now
    ):
        counts = change_counts(change_id)
        logger.info("bulk change %s finished: %s", change_id, " ".join(f"{k}={v}" for k, v in sorted(counts.items())))


# --- Confirm, run, resume, cancel ----------------------------------------------------------------


def _queue(change: Change, statuses: tuple[str, ...]) -> int:
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            ChangeItem.objects.select_for_update()
            .filter(change=change, status__in=statuses)
            .values_list("pk", flat=True)
        )
        ChangeItem.objects.filter(pk__in=ids).update(
            status=Status.QUEUED, reason="", dispatched_at=now, lease_until=None
        )
        transaction.on_commit(lambda: enqueue_each(_item_tasks().change_item_run_task, ids))
    return len(ids)


def change_confirm(*, change: Change, user) -> int:
    """Run the items the dry run found ready. Returns how many were queued (0: not confirmable)."""
    updated = Change.objects.filter(pk=change.pk, status=Change.Status.PREVIEWED).update(
        status=Change.Status.RUNNING, confirmed_by=user, confirmed_at=timezone.now()
    )
    if not updated:
        return 0
    change.refresh_from_db()
    queued = _queue(change, (Status.READY,))
    if not queued:
        _finish_phase(change.pk)
    logger.info("bulk change %s confirmed by %s: %s item(s) queued", change.pk, user.pk, queued)
    return queued


def change_resume(*, change: Change, user) -> int:
    """Queue the blocked items again (after the client reconnected, say). Nothing else runs again."""
    with transaction.atomic():
        locked = Change.objects.select_for_update().get(pk=change.pk)
        if locked.status not in (Change.Status.FINISHED, Change.Status.RUNNING):
            return 0
        if not ChangeItem.objects.filter(change=locked, status=Status.BLOCKED).exists():
            return 0
        Change.objects.filter(pk=locked.pk).update(status=Change.Status.RUNNING, confirmed_by=user, finished_at=None)
        queued = _queue(locked, (Status.BLOCKED,))
    logger.info("bulk change %s resumed by %s: %s item(s) queued", change.pk, user.pk, queued)
    return queued


def change_cancel(*, change: Change) -> bool:
    """Cancel before confirmation (nothing has run)."""
    return bool(
        Change.objects.filter(pk=change.pk, status__in=[Change.Status.PREVIEWING, Change.Status.PREVIEWED]).update(
            status=Change.Status.CANCELLED, finished_at=timezone.now()
        )
    )


def _claim(item_id: int) -> bool:
    now = timezone.now()
    lease = now + timedelta(seconds=settings.CHANGE_ITEM_LEASE)
    return bool(
        ChangeItem.objects.filter(pk=item_id, change__status=Change.Status.RUNNING)
        .filter(Q(status=Status.QUEUED) | Q(status=Status.RUNNING, lease_until__lt=now))
        .update(status=Status.RUNNING, lease_until=lease, attempts=F("attempts") + 1)
    )


def change_item_run(*, item_id: int) -> str | None:
    """Run one item. Returns its new status (None: claimed by someone else, or not runnable)."""
    if not _claim(item_id):
        return None
    item = ChangeItem.objects.select_related("change__confirmed_by", "zone__account__client").get(pk=item_id)
    change = item.change
    plan = plan_get(change.plan)
    outcome = plan.run(
        actor=_actor(change, confirmed=True),
        zone=item.zone,
        inputs=change.inputs,
        key=f"change-{change.pk}-item-{item.pk}",
        item_id=item.pk,
        # The key includes the item: on its first claim no earlier record with it can exist.
        first_attempt=item.attempts == 1,
    )
    now = timezone.now()
    if outcome.status == "queued":
        delay = max(1.0, float(outcome.retry_after or 1))
        _save_outcome(item_id, outcome, field="result", lease_until=None, dispatched_at=now + timedelta(seconds=delay))
        _item_tasks().change_item_run_task.apply_async((item_id,), countdown=delay)
        return outcome.status
    _save_outcome(item_id, outcome, field="result", lease_until=None, finished_at=now)
    if outcome.grant_failed and outcome.grant_id:
        # The same token will be refused again: stop this grant's other waiting items now (each
        # queued item carries the grant its dry run passed the gate with).
        stopped = ChangeItem.objects.filter(change=change, grant_id=outcome.grant_id, status=Status.QUEUED).update(
            status=Status.BLOCKED, reason=outcome.reason, finished_at=now
        )
        if stopped:
            logger.info("bulk change %s: %s item(s) of grant %s blocked", change.pk, stopped, outcome.grant_id)
    logger.info("bulk change %s item %s: %s", change.pk, item_id, outcome.status)
    _finish_phase(change.pk)
    return outcome.status


# --- The sweep: nothing waits forever ------------------------------------------------------------


def change_items_dispatch_stalled(*, now=None) -> int:
    """Re-dispatch items whose message is late (lost) and running items whose lease expired."""
    now = now or timezone.now()
    late = now - timedelta(seconds=settings.CHANGE_REDISPATCH_AFTER)
    tasks = _item_tasks()
    stalled = (
        (
            Q(status=Status.PENDING, change__status=Change.Status.PREVIEWING, dispatched_at__lt=late),
            tasks.change_item_preview_task,
        ),
        (
            Q(status=Status.QUEUED, change__status=Change.Status.RUNNING, dispatched_at__lt=late),
            tasks.change_item_run_task,
        ),
        (
            Q(status=Status.RUNNING, change__status=Change.Status.RUNNING, lease_until__lt=now),
            tasks.change_item_run_task,
        ),
    )
    dispatched = 0
    for condition, task in stalled:
        with transaction.atomic():
            ids = list(
                ChangeItem.objects.select_for_update(skip_locked=True)
                .filter(condition)
                .values_list("pk", flat=True)[:1000]
            )
            ChangeItem.objects.filter(pk__in=ids).update(dispatched_at=now)
            transaction.on_commit(lambda ids=ids, task=task: enqueue_each(task, ids))
        dispatched += len(ids)
    if dispatched:
        logger.info("bulk changes: %s stalled item(s) dispatched again", dispatched)
    return dispatched


# --- Reading -------------------------------------------------------------------------------------


def change_counts(change_id: int) -> dict[str, int]:
    """Items per status, in one query."""
    rows = ChangeItem.objects.filter(change_id=change_id).values("status").annotate(n=Count("id")).order_by()
    return {row["status"]: row["n"] for row in rows}
