"""Celery entry points: ids in, a service call out. Classification lives in the services."""

from __future__ import annotations

from celery import shared_task


@shared_task(ignore_result=True)
def deliver_alert_task(alert_id: int) -> None:
    from .services.alerts import alert_deliver

    alert_deliver(alert_id=alert_id)


# --- The background engine -----------------------------------------------------------------------
# No autoretry on any of these: the services record the outcome on the row and schedule the next
# attempt in the database (a blind Celery retry of a refresh could present a rotated token).
# The sweeps expire after 55 s: after a broker outage a backlog of minute ticks collapses into one.


@shared_task(ignore_result=True)
def refresh_grant_task(grant_id: int) -> None:
    from .services.refresh import grant_refresh

    grant_refresh(grant_id=grant_id)


@shared_task(ignore_result=True)
def refresh_grants_task(grant_ids: list[int]) -> None:
    from .services.refresh import grants_refresh

    grants_refresh(grant_ids=grant_ids)


@shared_task(ignore_result=True)
def check_grant_task(grant_id: int) -> None:
    from .services.health import grant_check

    grant_check(grant_id=grant_id)


@shared_task(ignore_result=True)
def check_grants_task(grant_ids: list[int]) -> None:
    from .services.health import grants_check

    grants_check(grant_ids=grant_ids)


@shared_task(ignore_result=True, expires=55)
def sweep_due_refreshes_task() -> None:
    from django.core.cache import cache

    from .services.refresh import grants_dispatch_due_refreshes, refresh_followup_in

    grants_dispatch_due_refreshes()
    # Short-lived tokens: one more sweep at the earliest due time before the next beat sweep. One
    # pending follow-up at a time (cache.add), so beat and follow-ups never multiply each other.
    delay = refresh_followup_in()
    if delay is not None and cache.add("grant-refresh-followup", 1, timeout=max(1, int(delay))):
        sweep_due_refreshes_task.apply_async(countdown=delay, expires=delay + 55)


@shared_task(ignore_result=True, expires=55)
def sweep_due_checks_task() -> None:
    from .services.health import grants_dispatch_due_checks

    grants_dispatch_due_checks()


@shared_task(ignore_result=True, expires=55)
def sweep_undelivered_alerts_task() -> None:
    from .services.alerts import alerts_dispatch_due

    alerts_dispatch_due()


# --- Disconnect: revocation at Cloudflare ---------------------------------------------------------


@shared_task(ignore_result=True)
def revoke_grant_task(grant_id: int) -> None:
    from .services.disconnect import grant_revoke_at_cloudflare

    grant_revoke_at_cloudflare(grant_id=grant_id)


@shared_task(ignore_result=True, expires=55)
def sweep_pending_revocations_task() -> None:
    from .services.disconnect import revoke_pending_sweep

    revoke_pending_sweep()


@shared_task(ignore_result=True, expires=55)
def expire_authorization_requests_task() -> None:
    from .services.consent import authorization_requests_expire

    authorization_requests_expire()
