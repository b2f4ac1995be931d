"""Staff actions on grants call the services and report counts, against the running sandbox."""

from __future__ import annotations

import pytest
from django.core import mail
from django.urls import reverse

from connections.models import Grant, GrantEvent
from tests import factories
from tests.sandbox_grants import mint_grants, register_app

pytestmark = pytest.mark.sandbox


@pytest.fixture(autouse=True)
def _fresh_limits():
    from connections import ratelimit

    ratelimit.reset()


@pytest.fixture
def live_grants(cf_sandbox, acme, db):
    app = register_app(cf_sandbox)
    return mint_grants(cf_sandbox, app=app, client=acme, count=2)


def _act(admin_client, action: str, grants) -> str:
    response = admin_client.post(
        reverse("admin:connections_grant_changelist"),
        {"action": action, "_selected_action": [g.pk for g in grants]},
        follow=True,
    )
    return " ".join(str(m) for m in response.context["messages"])


def test_refresh_now_rotates_each_selected_grant_once_and_reports_it(admin_client, cf_sandbox, live_grants):
    before = {g.pk: g.refresh_token_fp for g in live_grants}
    message = _act(admin_client, "refresh_now", live_grants)
    assert "Refresh of 2 grant(s): 2 refreshed" in message
    for grant in Grant.objects.filter(pk__in=before):
        assert grant.refresh_token_fp != before[grant.pk]
        truth = cf_sandbox.state(token_sha256=grant.refresh_token_fp)["grants"]
        assert truth and truth[0]["status"] == "active"
    assert cf_sandbox.state()["reuse_count"] == 0


def test_check_now_probes_each_grant_and_reports_it(admin_client, cf_sandbox, live_grants):
    message = _act(admin_client, "check_now", live_grants)
    assert "Health check of 2 grant(s)" in message
    assert all(g.last_checked_at for g in Grant.objects.filter(pk__in=[g.pk for g in live_grants]))


def test_refresh_now_refuses_a_selection_too_large_for_one_request(admin_client, db):
    grants = factories.GrantFactory.create_batch(21)
    message = _act(admin_client, "refresh_now", grants)
    assert "at most 20" in message


def test_send_reconsent_link_emails_the_owner_only_what_is_missing(
    admin_client, acme, client_owner, django_capture_on_commit_callbacks
):
    partial = factories.GrantFactory(client=acme, declined_scopes=["dns.write"])
    complete = factories.GrantFactory(client=acme)
    with django_capture_on_commit_callbacks(execute=True):
        message = _act(admin_client, "send_reconsent_link", [partial, complete])
    assert "Sent a re-consent link for 1 grant(s)" in message and "1 grant(s) miss nothing" in message
    (email,) = mail.outbox
    assert email.to == [client_owner.email]
    assert f"/oauth/grants/{partial.code}/add-permissions/" in email.body
    assert "DNS" in email.body
    event = GrantEvent.objects.get(kind=GrantEvent.Kind.RECONSENT_REQUESTED)
    assert event.grant == partial and event.actor_type == "staff"


def test_send_reconsent_link_says_when_no_contact_can_receive_it(admin_client, db):
    lost = factories.GrantFactory(status=Grant.Status.NEEDS_RECONSENT, declined_scopes=["cache.purge"])
    message = _act(admin_client, "send_reconsent_link", [lost])
    assert "no joined owner contact" in message
    assert not mail.outbox
