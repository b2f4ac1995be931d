"""Claiming due work from the database and handing it to the workers (refresh and check sweeps)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from ..models import Grant

logger = logging.getLogger(__name__)


def grants_dispatch_due(
    *,
    due: Callable[[datetime], QuerySet[Grant]],
    due_field: str,
    task,
    label: str,
    now: datetime | None = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
    per_message: int = 1,
    spread: tuple[int, int] = (1, 1),
) -> int:
    """Claim due grants in batches and enqueue them after commit: one `task` per grant, or, when
    `per_message` > 1, one `task` per list of up to that many grant ids.

    `spread` (messages, least per message): when a sweep finds few grants, they still go out in
    up to that many messages (of at least that many grants each) so that several worker processes
    share them, rather than one long message for one process.

    The database is the source of truth: the claim moves each grant's `due_field` forward by
    `GRANT_DISPATCH_RETRY`, so a second dispatcher running at the same time does not see it (and on
    PostgreSQL `SKIP LOCKED` keeps two sweeps off the same rows while they run). If a message is
    lost (broker restart, a worker killed before acking) the grant simply becomes due again after
    that delay and the next sweep enqueues it again. The tasks are single-flight, so a duplicate
    message costs one cheap claim attempt.
    """
    now = now or timezone.now()
    batch_size = batch_size or settings.GRANT_SWEEP_BATCH
    max_batches = max_batches or settings.GRANT_SWEEP_MAX_BATCHES
    redispatch = now + timedelta(seconds=settings.GRANT_DISPATCH_RETRY)
    total = 0
    for round_ in range(max_batches):
        with transaction.atomic():
            ids = list(due(now).select_for_update(skip_locked=True).values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            Grant.objects.filter(pk__in=ids, **{f"{due_field}__lte": now}).update(**{due_field: redispatch})
            if per_message > 1:
                size = per_message
                if round_ == 0 and len(ids) < batch_size:  # all that is due: share it out
                    messages, least = spread
                    size = min(per_message, max(least, -(-len(ids) // max(1, messages))))
                chunks = [ids[i : i + size] for i in range(0, len(ids), size)]
                transaction.on_commit(lambda chunks=chunks: enqueue_each(task, chunks))
            else:
                transaction.on_commit(lambda ids=ids: enqueue_each(task, ids))
        total += len(ids)
        if len(ids) < batch_size:
            break
    if total:
        logger.info("%s sweep: %s grant(s) due, enqueued", label, total)
    return total


def enqueue_each(task, ids: list) -> None:
    """Publish one message per id (or list of ids). A broker outage only delays: the rows become
    due again."""
    for n, pk in enumerate(ids):
        try:
            task.delay(pk)
        except Exception as exc:  # noqa: BLE001 - the next sweep re-finds the rest
            logger.warning(
                "%s: broker unavailable (%s); %s message(s) left for the next sweep",
                task.name,
                type(exc).__name__,
                len(ids) - n,
            )
            return
