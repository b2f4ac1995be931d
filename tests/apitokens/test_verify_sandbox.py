"""Verify each token at the sandbox: status, expiry, permissions (read or probed), reach; alerts."""

from __future__ import annotations

import pytest

from apitokens import services
from apitokens.mapping import BLOCKERS, MIGRATION_ONLY, PERMISSION_SCOPES, token_mapping
from apitokens.models import ApiToken, TokenAlert
from clients.models import Zone
from cloudflare_sandbox.api_tokens import PERMISSION_GROUPS
from cloudflare_sandbox.seed import ACME_CORP_ID

from .conftest import ACME_COM, sandbox_token

pytestmark = pytest.mark.django_db


def test_it_reads_permissions_and_reach_when_the_token_may_read_itself(cf_sandbox, acme):
    token = sandbox_token(
        cf_sandbox, acme, permissions=["API Tokens Read", "Zone Read", "DNS Read", "DNS Write"], zones=[ACME_COM]
    )
    assert token.status == "active" and token.permissions_source == "token"
    assert token.cf_token_id == token.issued["id"] and token.issued_on is not None
    assert set(token.permission_groups) == {"API Tokens Read", "Zone Read", "DNS Read", "DNS Write"}
    assert [z["name"] for z in token.reach_zones] == ["acme.com"]
    assert [a["id"] for a in token.reach_accounts] == [ACME_CORP_ID]
    assert token.mapped_scopes == ["user-details.read", "account-settings.read", "zone.read", "dns.read", "dns.write"]
    # The reach becomes the client's accounts and zones, before any grant exists.
    assert list(Zone.objects.filter(account__client=acme).values_list("name", flat=True)) == ["acme.com"]
    assert token.next_verify_at > token.last_verified_at


def test_it_infers_permissions_with_read_only_probes_and_never_writes(cf_sandbox, acme):
    token = sandbox_token(
        cf_sandbox,
        acme,
        permissions=["Zone Read", "DNS Read", "DNS Write", "Cache Purge"],
        zones=[ACME_COM],
        declared=["Cache Purge"],
    )
    assert token.permissions_source == "probes"
    # Reads are seen; writes cannot be without a write: what staff declared is kept.
    assert token.permission_groups == ["Zone Read", "DNS Read", "Cache Purge"]
    assert cf_sandbox.writes(api_token_id=token.issued["id"]) == []
    assert "cache.purge" in token.mapped_scopes and "dns.write" not in token.mapped_scopes


def test_an_account_owned_token_is_verified_under_its_account(cf_sandbox, acme):
    token = sandbox_token(
        cf_sandbox, acme, account_id=ACME_CORP_ID, permissions=["Zone Read", "Account API Tokens Read"]
    )
    assert token.owner == "account" and token.status == "active" and token.permissions_source == "token"
    assert {z["name"] for z in token.reach_zones} == {"acme.com", "acme.net", "acme.io"}


def test_an_expired_token_raises_one_alert_and_a_revoked_one_another(cf_sandbox, acme):
    cf_sandbox.settings(inactive_token_verify="status")
    expiring = sandbox_token(cf_sandbox, acme, name="old", permissions=["Zone Read"], expires_in=-1)
    assert expiring.status == "expired"
    services.api_token_verify(token_id=expiring.pk)  # seen again: still one alert
    assert TokenAlert.objects.filter(token=expiring, kind="token_expired", resolved_at=None).count() == 1

    cf_sandbox.reset_settings()
    revoked = sandbox_token(cf_sandbox, acme, name="gone", permissions=["Zone Read"])
    assert revoked.status == "active"
    cf_sandbox.delete_api_token(revoked.issued["id"])
    services.api_token_verify(token_id=revoked.pk)
    revoked.refresh_from_db()
    assert revoked.status == "invalid"
    assert TokenAlert.objects.get(token=revoked).kind == "token_invalid"
    assert revoked.events.filter(kind="verified").first().message == "Status Active → Revoked or deleted at Cloudflare"


def test_an_outage_never_changes_a_tokens_status(cf_sandbox, acme):
    token = sandbox_token(cf_sandbox, acme, permissions=["Zone Read"])
    cf_sandbox.set_faults(error_5xx_rate=1.0, error_5xx_endpoints=["api"])
    services.api_token_verify(token_id=token.pk)
    token.refresh_from_db()
    assert token.status == "active" and token.last_error and not TokenAlert.objects.exists()


def test_the_mapping_table_matches_cloudflares_permission_groups():
    for group in PERMISSION_GROUPS:
        if group.name in MIGRATION_ONLY:
            continue
        if group.name in BLOCKERS:
            assert group.oauth_scope is None, group.name
        else:
            assert PERMISSION_SCOPES[group.name] == group.oauth_scope, group.name


def test_a_permission_with_no_oauth_scope_is_a_blocker_and_the_smallest_set_serves_the_catalogue():
    mapping = token_mapping(["DNS Read", "dns edit", "Cloudflare Tunnel Write", "Analytics Read", "Cache Purge"])
    assert mapping.blockers[0][0] == "Cloudflare Tunnel Write"
    assert mapping.scopes == (
        "user-details.read",
        "account-settings.read",
        "zone.read",
        "cache.purge",
        "dns.read",
        "dns.write",
    )
    assert mapping.unused == ("analytics.read",)  # nothing in the catalogue uses it: not requested
    assert {a.id for a in mapping.actions} >= {"dns.record.create", "dns.record.delete", "cache.purge"}
    assert "zone.settings.read" not in {a.id for a in mapping.actions}


def test_a_verification_is_scheduled_and_made_due_by_an_auth_error(acme):
    from operations.credentials import token_auth_error
    from tests.apitokens.test_inventory import fake_token

    token = services.api_token_create(client=acme, name="t", token=fake_token(), purpose="customer", created_by=None)
    ApiToken.objects.filter(pk=token.pk).update(next_verify_at=None)
    token_auth_error(token.pk)
    token.refresh_from_db()
    assert token.next_verify_at is not None


def test_the_beat_sweep_verifies_tokens_that_are_due_and_only_those(cf_sandbox, acme, settings):
    from django.utils import timezone

    from apitokens.tasks import sweep_api_token_verifications_task

    settings.CELERY_TASK_ALWAYS_EAGER = True
    due = sandbox_token(cf_sandbox, acme, name="due", permissions=["Zone Read"])
    later = sandbox_token(cf_sandbox, acme, name="later", permissions=["Zone Read"])
    cf_sandbox.delete_api_token(due.issued["id"])
    cf_sandbox.delete_api_token(later.issued["id"])
    ApiToken.objects.filter(pk=due.pk).update(next_verify_at=timezone.now())
    assert sweep_api_token_verifications_task() == 1
    due.refresh_from_db()
    later.refresh_from_db()
    assert due.status == "invalid" and later.status == "active"
    assert due.next_verify_at > timezone.now()
