"""OA-07: a concurrently double-submitted callback makes exactly one token request and one grant.

Two threads, two database connections, the same session cookie, code and state. Runs on
PostgreSQL (SQLite serialises writers, which would hide a missing compare-and-set).
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.test import Client

from connections.models import AuthorizationRequest, Grant, GrantEvent
from tests.clients.portal_flow import authorize_at_sandbox, callback_path, register_sandbox_app, start_consent

pytestmark = [pytest.mark.sandbox, pytest.mark.postgres]


def test_it_makes_one_token_call_and_one_grant_for_a_double_submitted_callback(
    transactional_db, cf_sandbox, client_owner
):
    register_sandbox_app(cf_sandbox)
    browser = Client()
    browser.force_login(client_owner)
    location = authorize_at_sandbox(start_consent(browser))
    # Slow token answers widen the window in which a second request could slip through.
    cf_sandbox.set_faults(latency_ms=300, latency_endpoints=["token"])
    cf_sandbox.reset_counters()

    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def submit():
        tab = Client()
        tab.cookies = browser.cookies  # the same browser session, a second tab
        try:
            barrier.wait(timeout=10)
            statuses.append(tab.get(callback_path(location)).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert statuses == [303, 303]
    assert cf_sandbox.calls()["token:authorization_code"] == 1
    assert Grant.objects.count() == 1
    assert AuthorizationRequest.objects.get().outcome == "granted"
    assert GrantEvent.objects.filter(kind=GrantEvent.Kind.CALLBACK_REJECTED, detail__reason="replayed").count() == 1
