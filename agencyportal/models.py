"""Fleet statistics kept per day, for the dashboard's 30-day charts."""

from __future__ import annotations

import logging
import threading
import time

from django.db import models


class DailyFleetStats(models.Model):
    """One row per day: grant counts by health and status, as last recorded that day.

    Written by `agencyportal.tasks.record_fleet_stats_task` (hourly, upsert of today's row), so the
    history survives even though grants only keep their current state.
    """

    date = models.DateField(unique=True)
    grants_by_status = models.JSONField(default=dict)
    grants_by_health = models.JSONField(default=dict)
    # Token refreshes that day: counted as they happen (gathered per worker process and written
    # every few seconds), because the audit trail records only the edges of a failure streak.
    refresh_ok = models.PositiveIntegerField(default=0)
    refresh_failed = models.PositiveIntegerField(default=0)
    # A refresh that found the grant revoked by the user or Cloudflare: the client's decision, not a
    # failure of ours, so it is counted apart and does not lower the success rate.
    refresh_ended = models.PositiveIntegerField(default=0)
    recorded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-date"]
        verbose_name_plural = "daily fleet stats"

    def __str__(self) -> str:
        return f"Fleet on {self.date}"

    @classmethod
    def count_refresh(cls, *, ok: bool, ended: bool = False, batched: bool = False) -> None:
        """Add one refresh outcome to today's row (created on first use). Never raises.

        `ended`: the refresh found the grant revoked (counted apart from failures). `batched`: the
        engine's path. Counts gather in this process and are written every
        `FLEET_COUNT_FLUSH_SECONDS` (and when the worker process exits), so refreshes do not all
        queue on one row; a killed process loses at most that many seconds of statistics.
        """
        from django.conf import settings
        from django.utils import timezone

        field = "refresh_ended" if ended else "refresh_ok" if ok else "refresh_failed"
        key = (timezone.localdate(), field)
        with _counts_lock:
            _pending_counts[key] = _pending_counts.get(key, 0) + 1
        if not batched or time.monotonic() - _last_flush[0] >= float(settings.FLEET_COUNT_FLUSH_SECONDS):
            cls.flush_counts()

    @classmethod
    def flush_counts(cls) -> None:
        """Write the counts gathered in this process (one UPDATE per day and field). Never raises."""
        from django.db import IntegrityError, transaction
        from django.db.models import F

        _last_flush[0] = time.monotonic()
        with _counts_lock:
            pending = list(_pending_counts.items())
            _pending_counts.clear()
        for (day, field), n in pending:
            try:
                with transaction.atomic():
                    if not cls.objects.filter(date=day).update(**{field: F(field) + n}):
                        try:
                            with transaction.atomic():
                                cls.objects.create(date=day, **{field: n})
                        except IntegrityError:  # another worker created it first
                            cls.objects.filter(date=day).update(**{field: F(field) + n})
            except Exception:  # noqa: BLE001 - statistics must never break a refresh
                logging.getLogger(__name__).warning("Could not count %s refresh outcome(s)", n, exc_info=True)


# Refresh outcomes counted in this process and not written yet: {(day, field): n}.
_pending_counts: dict[tuple, int] = {}
_last_flush = [0.0]
_counts_lock = threading.Lock()
