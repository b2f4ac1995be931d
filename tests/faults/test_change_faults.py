"""Bulk changes under faults, with real worker processes, judged by the sandbox's ground truth.

A worker's whole process group is SIGKILLed in the middle of a change, while items are in flight
(some requests reached Cloudflare, some answers never came back). Nothing may be applied twice and
nothing may be lost: every zone ends with exactly one record, and every item settles.
"""

from __future__ import annotations

from collections import Counter

import pytest

from changes.models import Change, ChangeItem
from changes.services import change_confirm, change_counts, change_create, change_items_dispatch_stalled
from tests.changes.conftest import zoned_client
from tests.faults.conftest import wait_until
from tests.sandbox_grants import register_app, unique_label

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.redis, pytest.mark.sandbox]

LEASE = 6  # seconds: a killed worker's items run again soon after


def test_it_applies_no_item_twice_and_loses_none_when_a_worker_is_killed_mid_change(
    workers, cf_sandbox, agency_admin, settings
):
    from tests.operations.conftest import OPTIONAL

    settings.CHANGE_ITEM_LEASE = LEASE
    settings.CHANGE_REDISPATCH_AFTER = 2
    workers.env.update({"CHANGE_ITEM_LEASE": str(LEASE), "CHANGE_REDISPATCH_AFTER": "2"})
    app = register_app(cf_sandbox, name="Bulk fault app", optional=tuple(OPTIONAL))
    clients = [zoned_client(cf_sandbox, slug=f"kill-{n}", zones=12, app=app) for n in range(3)]
    zones = [z for c in clients for z in c.zones]
    name = f"_kill-{unique_label()}"
    first = workers.start(concurrency=3)

    change = change_create(
        user=agency_admin,
        plan_id="dns.record.create",
        inputs={"type": "TXT", "name": name, "content": "v=agency1"},
        zones=zones,
    )
    wait_until(lambda: Change.objects.get(pk=change.pk).status == Change.Status.PREVIEWED, timeout=60)
    assert change_counts(change.pk) == {"ready": 36}

    # Slow answers, so that the kill lands with requests in flight.
    cf_sandbox.set_faults(latency_ms=400, latency_endpoints=["api"])
    change.refresh_from_db()
    assert change_confirm(change=change, user=agency_admin) == 36
    wait_until(lambda: ChangeItem.objects.filter(change=change, status="done").count() >= 6, timeout=60)
    workers.kill(first)
    in_flight = ChangeItem.objects.filter(change=change, status="running").count()
    assert in_flight >= 1, "the kill should land with items running"

    workers.start(concurrency=3)
    # The test plays beat: the sweep finds the killed worker's items once their lease expired.
    wait_until(
        lambda: not ChangeItem.objects.filter(change=change, status__in=["queued", "running"]).exists(),
        timeout=120,
        tick=change_items_dispatch_stalled,
    )
    change.refresh_from_db()
    assert change.status == Change.Status.FINISHED
    counts = change_counts(change.pk)
    assert set(counts) <= {"done", "unchanged"} and sum(counts.values()) == 36, counts

    # Ground truth: exactly one record per zone, never two.
    creates = [w for w in cf_sandbox.writes(kind="dns.create") if w["after"]["name"].startswith(name + ".")]
    per_zone = Counter(w["zone_id"] for w in creates)
    assert set(per_zone) == {z.cf_zone_id for z in zones}
    assert set(per_zone.values()) == {1}
    # The items that ran again found their record and wrote nothing ("unchanged").
    rerun = ChangeItem.objects.filter(change=change, attempts__gt=1)
    assert rerun.count() >= in_flight
