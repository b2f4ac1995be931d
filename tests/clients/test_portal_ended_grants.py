"""An ended connection reads as ended: what ended it and when, no health, no current reach, Reconnect."""

from __future__ import annotations

import pytest
from django.utils import timezone

from connections.models import Grant
from tests import factories

pytestmark = [pytest.mark.django_db]


def _grant_with_reach(client, app, **fields) -> Grant:
    grant = factories.GrantFactory(client=client, app=app, health=Grant.Health.HEALTHY, **fields)
    account = factories.CloudflareAccountFactory(client=client, name="Acme main account")
    factories.ZoneFactory(account=account, name="acme-shop.example")
    grant.accounts.add(account)
    return grant


def test_right_after_disconnect_the_card_shows_no_health_and_no_reach(owner_client, oauth_app, acme):
    grant = _grant_with_reach(acme, oauth_app)
    Grant.objects.filter(pk=grant.pk).update(
        status=Grant.Status.DISCONNECTING, end_reason=Grant.EndReason.DISCONNECTED_BY_CLIENT
    )
    body = owner_client.get("/portal/").content.decode()
    assert "Working normally" not in body
    assert "acme-shop.example" not in body and "Accounts and zones the agency can reach" not in body
    assert "You disconnected it here" in body
    assert "no longer reaches your Cloudflare accounts" in body


@pytest.mark.parametrize(
    ("status", "reason", "text"),
    [
        (Grant.Status.REVOKED, Grant.EndReason.USER_REVOKED, "removed in Cloudflare&#x27;s dashboard"),
        (Grant.Status.DISCONNECTED, Grant.EndReason.DISCONNECTED_BY_STAFF, "The agency disconnected it"),
        (Grant.Status.LOST, Grant.EndReason.REFRESH_TOKEN_LOST, "stopped working and needs to be connected again"),
    ],
)
def test_a_client_whose_only_grant_ended_reads_what_happened_and_can_reconnect(
    owner_client, oauth_app, acme, status, reason, text
):
    ended_at = timezone.now()
    _grant_with_reach(acme, oauth_app, status=status, end_reason=reason, ended_at=ended_at)
    body = owner_client.get("/portal/").content.decode()
    assert "You have not connected Cloudflare yet" not in body
    assert "Your Cloudflare connection has ended" in body and text in body
    assert 'id="reconnect"' in body and 'href="/oauth/connect/"' in body
    assert "Working normally" not in body


def test_a_viewer_reads_what_happened_without_a_reconnect_button(client, oauth_app, acme):
    viewer = factories.ClientMemberFactory(client=acme, role="viewer").user
    client.force_login(viewer)
    _grant_with_reach(
        acme, oauth_app, status=Grant.Status.REVOKED, end_reason=Grant.EndReason.USER_REVOKED, ended_at=timezone.now()
    )
    body = client.get("/portal/").content.decode()
    assert "Your Cloudflare connection has ended" in body and 'id="reconnect"' not in body


def test_a_live_grant_beside_an_ended_one_keeps_the_normal_page(owner_client, oauth_app, acme):
    _grant_with_reach(acme, oauth_app)
    factories.GrantFactory(
        client=acme, app=oauth_app, status=Grant.Status.REVOKED, end_reason="user_revoked", ended_at=timezone.now()
    )
    body = owner_client.get("/portal/").content.decode()
    assert "Your Cloudflare connection has ended" not in body
    assert "Working normally" in body and "Earlier connections" in body
