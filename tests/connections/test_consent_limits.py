"""A consent finishes only for a contact who may still connect, and consent starts are limited."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from clients.models import ClientMember
from connections.models import AuthorizationRequest, Grant, GrantEvent
from tests.clients.portal_flow import authorize_at_sandbox, callback_path, start_consent

pytestmark = [pytest.mark.django_db]


def _token_calls(sandbox) -> int:
    return sandbox.calls().get("token", 0)


@pytest.mark.sandbox
@pytest.mark.parametrize("change", ["removed", "viewer", "client_off"])
def test_it_refuses_a_consent_finished_after_the_contact_lost_the_right_to_connect(
    cf_sandbox, owner_client, cf_app, client_owner, acme, change
):
    location = authorize_at_sandbox(start_consent(owner_client))
    member = ClientMember.objects.get(user=client_owner)
    if change == "removed":
        member.delete()
    elif change == "viewer":
        member.role = ClientMember.Role.VIEWER
        member.save()
    else:
        acme.is_active = False
        acme.save()
    owner_client.get(callback_path(location))
    assert _token_calls(cf_sandbox) == 0
    assert not Grant.objects.exists()
    request = AuthorizationRequest.objects.get()
    assert request.outcome == "error" and request.error_code == "not_allowed"
    assert GrantEvent.objects.filter(kind=GrantEvent.Kind.CALLBACK_REJECTED, detail__reason="not_allowed").exists()


@pytest.fixture
def limits(settings):
    settings.CONSENT_START_LIMIT_PER_CONTACT = 3
    settings.CONSENT_START_LIMIT_PER_CLIENT = 5
    settings.CONSENT_START_WINDOW = 600
    cache.clear()  # the test cache is local memory, never a shared server
    yield settings
    cache.clear()


def test_it_limits_consent_starts_per_contact_with_a_plain_message(owner_client, oauth_app, limits):
    for _ in range(3):
        assert owner_client.post("/oauth/connect/").status_code == 303
    refused = owner_client.post("/oauth/connect/", follow=True)
    assert AuthorizationRequest.objects.count() == 3  # nothing created for the refused one
    assert "started connecting many times" in refused.content.decode()


def test_it_limits_consent_starts_per_client_across_contacts(client, oauth_app, acme, limits):
    from tests import factories

    contacts = [factories.ClientMemberFactory(client=acme).user for _ in range(3)]
    started = 0
    for user in contacts:
        client.force_login(user)
        for _ in range(2):
            started += client.post("/oauth/connect/").status_code == 303
    assert started == 5 and AuthorizationRequest.objects.count() == 5
