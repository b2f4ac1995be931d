"""The SDK client: budgets on every request, 429 across workers, error classes, 9109/10000 evidence."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest
from django.utils import timezone

from connections import ratelimit
from connections.models import Grant
from operations.services import action_run

from .conftest import api_calls

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _own_limiter(settings):
    settings.CLOUDFLARE_RATELIMIT_KEY_PREFIX = f"ap:test-ops:{secrets.token_hex(4)}"
    settings.CLOUDFLARE_RATELIMIT_MAX_WAIT = 0.2
    ratelimit.reset()
    yield
    ratelimit.reset()


def run(actor, client, action_id, inputs=None, **target):
    return action_run(actor=actor, action_id=action_id, client=client, inputs=inputs or {}, **target)


def test_every_request_counts_against_the_users_budget(cf_sandbox, settings, staff_actor, acme, acme_grant, zone):
    settings.CLOUDFLARE_USER_BUDGET = 3
    # A create is two requests (look, then write): both are counted.
    assert run(
        staff_actor, acme, "dns.record.create", {"type": "TXT", "name": "b", "content": "1"}, zone=zone
    ).succeeded
    assert run(staff_actor, acme, "dns.records.list", zone=zone).outcome == "succeeded"
    assert api_calls(cf_sandbox) == 3
    over = run(staff_actor, acme, "dns.records.list", zone=zone)
    assert over.outcome == "unavailable" and "budget" in over.reason
    assert api_calls(cf_sandbox) == 3  # refused by our budget before anything left


def test_a_429_blocks_the_user_for_retry_after_in_the_shared_limiter(cf_sandbox, staff_actor, acme, acme_grant, zone):
    cf_sandbox.set_faults(storm_429=True, retry_after=30)
    limited = run(staff_actor, acme, "cache.purge", {"mode": "everything"}, zone=zone)
    assert limited.outcome == "unavailable"
    assert limited.result["retry_after"] == 30
    cf_sandbox.clear_faults()
    cf_sandbox.reset_counters()
    # Another worker (same Redis or process limiter) now waits instead of calling.
    assert ratelimit.acquire(user_key=acme_grant.cf_user_id) > 20
    assert run(staff_actor, acme, "dns.records.list", zone=zone).outcome == "unavailable"
    assert api_calls(cf_sandbox) == 0


def test_a_5xx_or_an_html_page_is_unavailable_and_changes_nothing(cf_sandbox, staff_actor, acme, acme_grant, zone):
    cf_sandbox.set_faults(error_5xx_rate=1.0)
    record = run(staff_actor, acme, "cache.purge", {"mode": "everything"}, zone=zone)
    assert record.outcome == "unavailable" and "unavailable" in record.reason


def test_a_write_without_an_answer_is_uncertain(cf_sandbox, settings, staff_actor, acme, acme_grant, zone):
    settings.CLOUDFLARE_READ_TIMEOUT = 0.3
    cf_sandbox.set_faults(latency_ms=1200, latency_endpoints=["api"])
    record = run(staff_actor, acme, "cache.purge", {"mode": "everything"}, zone=zone)
    assert record.outcome == "uncertain"
    assert "may or may not" in record.reason


def test_a_read_without_an_answer_is_only_unavailable(cf_sandbox, settings, staff_actor, acme, acme_grant, zone):
    settings.CLOUDFLARE_READ_TIMEOUT = 0.3
    cf_sandbox.set_faults(latency_ms=1200, latency_endpoints=["api"])
    record = run(staff_actor, acme, "dns.record.create", {"type": "TXT", "name": "c", "content": "1"}, zone=zone)
    assert record.outcome == "unavailable"  # the look-before-write read timed out: nothing was written


def test_an_auth_error_is_evidence_for_the_health_check_never_revoked(cf_sandbox, staff_actor, acme, acme_grant, zone):
    Grant.objects.filter(pk=acme_grant.pk).update(next_check_at=timezone.now() + timedelta(hours=5))
    cf_sandbox.revoke_grant(acme_grant.sandbox_grant_id)
    before = timezone.now()
    record = run(staff_actor, acme, "dns.records.list", zone=zone)
    assert record.outcome == "auth_error"
    assert set(record.error_codes) & {9109, 10000}
    assert record.pk is not None  # a failed read is kept as a row, not only counted
    grant = Grant.objects.get(pk=acme_grant.pk)
    assert grant.status == "active"
    assert grant.next_check_at <= timezone.now() and grant.next_check_at >= before
