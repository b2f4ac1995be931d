"""Fleet statistics kept per day, for the dashboard's 30-day charts."""

from __future__ import annotations

from django.db import models


class DailyFleetStats(models.Model):
    """One row per day: grant counts by health and status, as last recorded that day.

    Written by `agencyportal.tasks.record_fleet_stats_task` (hourly, upsert of today's row), so the
    history survives even though grants only keep their current state.
    """

    date = models.DateField(unique=True)
    grants_by_status = models.JSONField(default=dict)
    grants_by_health = models.JSONField(default=dict)
    # Token refreshes that day: counted as they happen (one tiny UPDATE per refresh), because
    # the audit trail records only the edges of a failure streak, not every attempt.
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
    def count_refresh(cls, *, ok: bool, ended: bool = False) -> None:
        """Add one refresh outcome to today's row (created on first use). Never raises.

        `ended`: the refresh found the grant revoked (counted apart from failures)."""
        from django.db import IntegrityError
        from django.db.models import F
        from django.utils import timezone

        field = "refresh_ended" if ended else "refresh_ok" if ok else "refresh_failed"
        today = timezone.localdate()
        try:
            if not cls.objects.filter(date=today).update(**{field: F(field) + 1}):
                try:
                    cls.objects.create(date=today, **{field: 1})
                except IntegrityError:  # another worker created it first
                    cls.objects.filter(date=today).update(**{field: F(field) + 1})
        except Exception:  # noqa: BLE001 - statistics must never break a refresh
            import logging

            logging.getLogger(__name__).warning("Could not count a refresh outcome", exc_info=True)
