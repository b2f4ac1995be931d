"""Celery entry points of the project itself (the connections app has its own)."""

from __future__ import annotations

from celery import shared_task


@shared_task(ignore_result=True, expires=3000)
def record_fleet_stats_task() -> None:
    from .dashboard import fleet_stats_record

    fleet_stats_record()
