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
    recorded_at = models.DateTimeField()

    class Meta:
        ordering = ["-date"]
        verbose_name_plural = "daily fleet stats"

    def __str__(self) -> str:
        return f"Fleet on {self.date}"
