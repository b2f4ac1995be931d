"""The Celery app. Settings live in Django settings under the CELERY_ namespace.

Run exactly one beat: the periodic tasks below only *find* due work in the database; the
per-grant tasks are single-flight, so a duplicate beat or a duplicate message is harmless,
but a second beat doubles the sweeps for nothing.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.schedules import crontab
from celery.signals import task_postrun, task_prerun, worker_process_shutdown, worker_ready, worker_shutdown
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agencyportal.settings")

app = Celery("agencyportal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(**kwargs) -> None:
    """Around every task, what Django does around every request: close a connection that is broken
    (an error occurred and it no longer answers) or older than CONN_MAX_AGE; keep a healthy one.
    Celery's own closing is off (CELERY_DB_REUSE_MAX), so tasks do not each pay a new connection."""
    task = kwargs.get("task")
    if task is not None and getattr(task.request, "is_eager", False):
        return  # eager tasks run inside the caller's transaction
    from django.db import close_old_connections

    close_old_connections()


@worker_process_shutdown.connect  # prefork: each pool process
@worker_shutdown.connect  # threads / solo pools: the worker itself
def _flush_fleet_counts(**kwargs) -> None:
    """The dashboard's refresh counters gathered in this process are written before it exits."""
    from agencyportal.models import DailyFleetStats

    DailyFleetStats.flush_counts()


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
    # Bulk changes: re-dispatch items whose message was lost or whose worker died. https://crontab.guru/#*_*_*_*_*
    "sweep-stalled-change-items": {
        "task": "changes.tasks.sweep_stalled_change_items_task",
        "schedule": crontab(minute="*"),
    },
    # Close consent attempts nobody came back from. https://crontab.guru/#*/10_*_*_*_*
    "expire-authorization-requests": {
        "task": "connections.tasks.expire_authorization_requests_task",
        "schedule": crontab(minute="*/10"),
    },
    # Re-verify stored API tokens that are due (expiry, revocation, reach). https://crontab.guru/#*/5_*_*_*_*
    "sweep-api-token-verifications": {
        "task": "apitokens.tasks.sweep_api_token_verifications_task",
        "schedule": crontab(minute="*/5"),
    },
    # Migration reminders, removal after the rollback window, overdue alerts. https://crontab.guru/#17_*_*_*_*
    "migration-sweep": {"task": "apitokens.tasks.migration_sweep_task", "schedule": crontab(minute=17)},
    # Re-enqueue token alert deliveries not done yet. https://crontab.guru/#*/5_*_*_*_*
    "sweep-token-alerts": {"task": "apitokens.tasks.sweep_token_alerts_task", "schedule": crontab(minute="*/5")},
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
