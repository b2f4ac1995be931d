"""A create whose look-before-write missed a record that then turns out to exist (an earlier
request still landing, a concurrent writer) reads it back instead of failing."""

from __future__ import annotations

import pytest

from operations import executors
from operations.services import action_run
from tests.sandbox_grants import unique_label

pytestmark = pytest.mark.django_db


def test_it_reads_back_the_record_when_cloudflare_says_an_identical_one_exists(
    cf_sandbox, acme, zone, staff_actor, monkeypatch
):
    inputs = {"type": "TXT", "name": f"_race-{unique_label()}", "content": "v=race"}
    first = action_run(actor=staff_actor, action_id="dns.record.create", client=acme, zone=zone, inputs=inputs)
    assert first.succeeded and first.result["existed"] is False

    real = executors._find_same
    looks = []

    def miss_once(*args, **kwargs):
        looks.append(1)
        return None if len(looks) == 1 else real(*args, **kwargs)

    monkeypatch.setattr(executors, "_find_same", miss_once)
    again = action_run(actor=staff_actor, action_id="dns.record.create", client=acme, zone=zone, inputs=inputs)
    assert again.succeeded, again.reason
    assert again.result == {**again.result, "existed": True, "record_id": first.result["record_id"]}
    creates = cf_sandbox.writes(kind="dns.create", record_id=first.result["record_id"])
    assert len(creates) == 1
