"""Celery entry points for bulk changes: ids in, a service call out."""

from __future__ import annotations

from celery import shared_task


@shared_task(ignore_result=True)
def change_item_preview_task(item_id: int) -> None:
    from .services import change_item_preview

    change_item_preview(item_id=item_id)


@shared_task(ignore_result=True)
def change_item_run_task(item_id: int) -> None:
    from .services import change_item_run

    change_item_run(item_id=item_id)


@shared_task(ignore_result=True, expires=55)
def sweep_stalled_change_items_task() -> None:
    from .services import change_items_dispatch_stalled

    change_items_dispatch_stalled()
