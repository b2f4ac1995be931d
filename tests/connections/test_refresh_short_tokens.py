"""60-second tokens are replaced before they expire, although beat sweeps only once a minute.

The timeline is simulated: beat's sweep at every minute boundary, the follow-up sweeps the task
asks for run at their countdown, and a dispatched refresh lands at once with a new 60-second token.
"""

from __future__ import annotations

import heapq
from datetime import datetime, timedelta
from unittest import mock

import pytest
import time_machine
from django.core.cache import cache
from django.utils import timezone

from connections import tasks
from connections.models import Grant
from connections.services.refresh import refresh_due_at, refresh_followup_in
from tests import factories

pytestmark = [pytest.mark.django_db]

LIFETIME = 60


def _simulate(*, minutes: int, followups: bool, django_capture_on_commit_callbacks) -> list[tuple[int, float]]:
    """Run the schedule; return (grant id, seconds late) for every refresh dispatched after expiry."""
    start = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.get_current_timezone())
    app = factories.OAuthAppFactory()
    grants = []
    for i in range(12):  # tokens issued at spread-out moments of the first minute
        issued = start + timedelta(seconds=5 * i)
        expires = issued + timedelta(seconds=LIFETIME)
        grants.append(
            factories.GrantFactory(
                app=app,
                authorized_at=issued,
                access_expires_at=expires,
                next_refresh_at=refresh_due_at(expires_at=expires, lifetime=LIFETIME),
            )
        )
    late: list[tuple[int, float]] = []
    queue = [(start + timedelta(minutes=m), "beat") for m in range(minutes + 1)]
    heapq.heapify(queue)
    cache.delete("grant-refresh-followup")

    def refresh_now(pk, now):
        grant = Grant.objects.get(pk=pk)
        if grant.access_expires_at < now:
            late.append((pk, (now - grant.access_expires_at).total_seconds()))
        expires = now + timedelta(seconds=LIFETIME)
        Grant.objects.filter(pk=pk).update(
            last_refreshed_at=now,
            access_expires_at=expires,
            next_refresh_at=refresh_due_at(expires_at=expires, lifetime=LIFETIME),
        )

    end = start + timedelta(minutes=minutes)
    while queue:
        at, _ = heapq.heappop(queue)
        if at > end:
            break
        with time_machine.travel(at, tick=False):
            dispatched: list[int] = []
            scheduled: list[float] = []
            with (
                mock.patch.object(tasks.refresh_grants_task, "delay", side_effect=dispatched.extend),
                mock.patch.object(
                    tasks.sweep_due_refreshes_task,
                    "apply_async",
                    side_effect=lambda countdown, expires, scheduled=scheduled: scheduled.append(countdown),
                ),
                django_capture_on_commit_callbacks(execute=True),
            ):
                tasks.sweep_due_refreshes_task.run()
            for pk in dispatched:
                refresh_now(pk, at)
            if followups:
                for countdown in scheduled:
                    cache.delete("grant-refresh-followup")  # the follow-up runs: the slot is free again
                    heapq.heappush(queue, (at + timedelta(seconds=countdown), "followup"))
    return late


def test_sixty_second_tokens_are_always_refreshed_before_they_expire(django_capture_on_commit_callbacks):
    assert (
        _simulate(minutes=5, followups=True, django_capture_on_commit_callbacks=django_capture_on_commit_callbacks)
        == []
    )


def test_with_beat_alone_sixty_second_tokens_would_expire(django_capture_on_commit_callbacks):
    # The same schedule without the follow-up sweeps: the scenario above is a real test.
    late = _simulate(minutes=5, followups=False, django_capture_on_commit_callbacks=django_capture_on_commit_callbacks)
    assert late


def test_no_follow_up_when_nothing_is_due_before_the_next_beat_sweep():
    factories.GrantFactory(next_refresh_at=timezone.now() + timedelta(minutes=10))
    assert refresh_followup_in() is None


def test_follow_ups_are_at_least_the_minimum_apart(settings):
    settings.GRANT_SWEEP_FOLLOWUP_MIN = 5
    factories.GrantFactory(next_refresh_at=timezone.now() + timedelta(seconds=1))
    assert refresh_followup_in() == 5.0
