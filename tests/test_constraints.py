"""The database rejects rows that would break the model's promises."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from clients.models import ClientMember
from connections.models import Alert, AuthorizationRequest, Grant, OAuthApp
from tests import factories


def _rejects(fn) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        fn()


def test_it_rejects_an_unknown_grant_status(db):
    grant = factories.GrantFactory()
    _rejects(lambda: Grant.objects.filter(pk=grant.pk).update(status="zombie"))


def test_it_rejects_an_ended_grant_that_still_holds_tokens(db):
    grant = factories.GrantFactory()
    _rejects(lambda: Grant.objects.filter(pk=grant.pk).update(status="revoked", ended_at=timezone.now()))


def test_it_accepts_an_ended_grant_without_tokens(db):
    grant = factories.GrantFactory()
    grant.clear_tokens()
    grant.status, grant.ended_at = Grant.Status.REVOKED, timezone.now()
    grant.save()
    assert Grant.objects.get(pk=grant.pk).refresh_token == ""


def test_it_allows_one_live_grant_per_client_app_and_cloudflare_user(db):
    grant = factories.GrantFactory()
    _rejects(lambda: factories.GrantFactory(client=grant.client, app=grant.app, cf_user_id=grant.cf_user_id))
    # An ended grant of the same user does not count: that is how a re-consent replaces one.
    grant.clear_tokens()
    grant.status, grant.ended_at = Grant.Status.DISCONNECTED, timezone.now()
    grant.save()
    factories.GrantFactory(client=grant.client, app=grant.app, cf_user_id=grant.cf_user_id)


def test_it_keeps_one_open_alert_per_grant_and_kind(db):
    alert = factories.AlertFactory(kind=Alert.Kind.REVOKED)
    _rejects(lambda: factories.AlertFactory(grant=alert.grant, kind=Alert.Kind.REVOKED))
    Alert.objects.filter(pk=alert.pk).update(resolved_at=timezone.now())
    factories.AlertFactory(grant=alert.grant, kind=Alert.Kind.REVOKED)


def test_it_rejects_an_alert_about_nothing(db):
    _rejects(lambda: Alert.objects.create(kind="revoked", message="?"))


def test_it_rejects_a_second_default_oauth_app(db):
    factories.OAuthAppFactory(is_default=True)
    _rejects(lambda: factories.OAuthAppFactory(is_default=True))


def test_it_rejects_an_unknown_auth_method(db):
    app = factories.OAuthAppFactory()
    _rejects(lambda: OAuthApp.objects.filter(pk=app.pk).update(token_endpoint_auth_method="none"))


def test_it_rejects_a_finished_consent_attempt_that_was_not_consumed(db):
    req = factories.AuthorizationRequestFactory()
    _rejects(lambda: AuthorizationRequest.objects.filter(pk=req.pk).update(outcome="granted"))


def test_it_rejects_an_unknown_member_role(db):
    member = factories.ClientMemberFactory()
    _rejects(lambda: ClientMember.objects.filter(pk=member.pk).update(role="god"))


def test_it_rejects_the_same_cloudflare_account_twice_for_a_client(db):
    account = factories.CloudflareAccountFactory()
    _rejects(lambda: factories.CloudflareAccountFactory(client=account.client, cf_account_id=account.cf_account_id))


def test_it_rejects_the_same_zone_twice_in_an_account(db):
    zone = factories.ZoneFactory()
    _rejects(lambda: factories.ZoneFactory(account=zone.account, cf_zone_id=zone.cf_zone_id))
