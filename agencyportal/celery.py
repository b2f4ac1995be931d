"""The Celery app. Settings live in Django settings under the CELERY_ namespace.

Run exactly one beat: the periodic tasks below only *find* due work in the database; the
per-grant tasks are single-flight, so a duplicate beat or a duplicate message is harmless,
but a second beat doubles the sweeps for nothing.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.schedules import crontab
from celery.signals import worker_ready
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agencyportal.settings")

app = Celery("agencyportal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The periodic schedule, defined once. Each entry only claims due rows; see connections/tasks.py.
app.conf.beat_schedule = {
    # Claim grants whose token refresh is due, one task per grant, every GRANT_SWEEP_INTERVAL (15) s:
    # a grant whose holder died is found again moments after its lease ends.
    "sweep-due-refreshes": {
        "task": "connections.tasks.sweep_due_refreshes_task",
        "schedule": float(settings.GRANT_SWEEP_INTERVAL),
    },
    # Claim grants whose health check is due, one task per grant. https://crontab.guru/#*_*_*_*_*
    "sweep-due-checks": {"task": "connections.tasks.sweep_due_checks_task", "schedule": crontab(minute="*")},
    # Re-enqueue alert deliveries that are due (lost messages, retries). https://crontab.guru/#*_*_*_*_*
    "sweep-undelivered-alerts": {
        "task": "connections.tasks.sweep_undelivered_alerts_task",
        "schedule": crontab(minute="*"),
    },
    # Retry revocations at Cloudflare that are due (503s, outages, lost messages). https://crontab.guru/#*_*_*_*_*
    "sweep-pending-revocations": {
        "task": "connections.tasks.sweep_pending_revocations_task",
        "schedule": crontab(minute="*"),
    },
    # Close consent attempts nobody came back from. https://crontab.guru/#*/10_*_*_*_*
    "expire-authorization-requests": {
        "task": "connections.tasks.expire_authorization_requests_task",
        "schedule": crontab(minute="*/10"),
    },
    # Snapshot grant health for the dashboard's 30-day chart, hourly. https://crontab.guru/#7_*_*_*_*
    "record-fleet-stats": {"task": "agencyportal.tasks.record_fleet_stats_task", "schedule": crontab(minute=7)},
}


@worker_ready.connect
def apply_token_spool(**_kwargs) -> None:
    """A worker starting writes the tokens spooled during a database outage (fenced by generation)."""
    import logging

    try:
        from connections.services.token_spool import spool_apply

        spool_apply()
    except Exception:  # noqa: BLE001 - the refresh sweep applies it too
        logging.getLogger(__name__).warning("token spool not applied at worker start", exc_info=True)
