"""Three clients migrate in the sandbox: one clean; one blocked (kept as internal automation);
one whose contact declines an optional scope (parity fails, staff override). Rollback and both
removal paths; no token in logs or in a database dump."""

from __future__ import annotations

import io
import logging
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.management import call_command
from django.utils import timezone

from apitokens import services
from apitokens.models import ApiToken, TokenAlert
from apitokens.selectors import board_counts
from clients.models import Zone
from operations.gate import Actor
from operations.services import action_run
from tests.clients.portal_flow import authorize_at_sandbox, callback_path

from .conftest import ACME_COM, sandbox_token

pytestmark = pytest.mark.django_db

TXT = {"type": "TXT", "name": "_migration", "content": "hello"}


def _connect(client, token, django_capture_on_commit_callbacks, **consent) -> str:
    """The contact opens the migration page, continues to Cloudflare and comes back."""
    page = client.get(f"/portal/migration/{token.code}/")
    assert page.status_code == 200
    start = client.post(f"/portal/migration/{token.code}/")
    assert start.status_code == 303
    scope = parse_qs(urlsplit(start["Location"]).query)["scope"][0]
    location = authorize_at_sandbox(start["Location"], **consent)
    with django_capture_on_commit_callbacks(execute=True):
        done = client.get(callback_path(location))
    assert done.status_code == 303
    return scope


def _dump() -> str:
    """`dumpdata` of the migration's apps, and every value of every table as the database holds it."""
    from tests.test_secrets_at_rest import _every_text_value

    out = io.StringIO()
    call_command("dumpdata", "apitokens", "operations", stdout=out)
    return out.getvalue() + "\n".join(_every_text_value())


def test_a_clean_client_migrates_rolls_back_cuts_over_and_the_portal_deletes_the_token(
    cf_sandbox, cf_app, acme, client_owner, client, agency_admin, mailoutbox, caplog, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.DEBUG)
    token = sandbox_token(
        cf_sandbox,
        acme,
        permissions=["API Tokens Read", "API Tokens Write", "User Details Read", "Zone Read", "DNS Read", "DNS Write"],
        zones=[ACME_COM],
    )
    secret = token.issued["token"]
    assert token.can_delete_itself and not token.blockers
    zone = Zone.objects.get(account__client=acme, cf_zone_id=ACME_COM)
    staff = Actor(user=agency_admin)

    # Before cutover the client's actions run with its token, and the record says so.
    created = action_run(actor=staff, action_id="dns.record.create", client=acme, zone=zone, inputs=TXT)
    assert created.outcome == "succeeded", created.reason
    assert created.credential == "api_token" and created.api_token_id == token.pk and created.grant is None
    assert len(cf_sandbox.writes(api_token_id=token.issued["id"])) == 1

    services.migration_invite(token=token, sent_by=agency_admin)
    assert mailoutbox[-1].to == [client_owner.email] and f"/portal/migration/{token.code}/" in mailoutbox[-1].body

    client.force_login(client_owner)
    page = client.get(f"/portal/migration/{token.code}/").content.decode()
    assert "agency tools" in page and "Add DNS records to your zones" in page and "the old token is deleted" in page
    scope = _connect(client, token, django_capture_on_commit_callbacks)
    # Exactly the mapped scopes, nothing else the app could ask for.
    assert scope == "offline_access user-details.read account-settings.read zone.read dns.read dns.write"
    token.refresh_from_db()
    assert token.state == "parity" and token.grant is not None and token.parity_diff == []

    services.cutover(token=token, by=agency_admin)
    token.refresh_from_db()
    assert token.state == "cut_over"
    assert abs(token.standby_until - (timezone.now() + timedelta(days=14))) < timedelta(minutes=1)
    on_grant = action_run(actor=staff, action_id="dns.records.list", client=acme, zone=zone, inputs={})
    assert on_grant.outcome == "succeeded" and on_grant.credential == "grant" and on_grant.grant_id == token.grant_id

    services.rollback(token=token, by=agency_admin)
    token.refresh_from_db()
    assert token.state == "parity"
    deleted = action_run(
        actor=staff,
        action_id="dns.record.delete",
        client=acme,
        zone=zone,
        inputs={"record_id": created.result["record_id"]},
    )
    assert deleted.outcome == "succeeded" and deleted.credential == "api_token"

    services.cutover(token=token, by=agency_admin)
    assert secret not in _dump()
    services.removal_start(token=ApiToken.objects.get(pk=token.pk), by=agency_admin)
    token.refresh_from_db()
    assert token.state == "removed" and token.status == "erased" and token.token == ""
    assert token.removal_how == "deleted_by_portal"
    assert token.issued["id"] not in {t["id"] for t in cf_sandbox.api_tokens()}
    kinds = list(token.events.order_by("at", "id").values_list("kind", flat=True))
    assert kinds[-2:] == ["deleted_at_cloudflare", "erased"]
    assert {"invited", "connected", "parity", "cut_over", "rolled_back"} <= set(kinds)
    assert board_counts()["removed"] == 1
    assert secret not in caplog.text and secret not in _dump()


def test_a_client_whose_contact_declines_an_optional_scope_needs_an_override_and_deletes_the_token_itself(
    cf_sandbox, cf_app, acme, client_owner, client, agency_admin, mailoutbox, django_capture_on_commit_callbacks
):
    token = sandbox_token(
        cf_sandbox, acme, permissions=["API Tokens Read", "Zone Read", "DNS Read", "Cache Purge"], zones=[ACME_COM]
    )
    assert not token.can_delete_itself
    services.migration_invite(token=token, sent_by=agency_admin)
    client.force_login(client_owner)
    _connect(client, token, django_capture_on_commit_callbacks, optional_scopes=[])  # unticks cache.purge

    token.refresh_from_db()
    assert token.state == "connected"
    assert token.parity_diff == [
        "The connection does not allow: Clear Cloudflare's cache for your sites, so visitors see fresh content."
    ]
    assert "Your connection gives the agency less" in client.get(f"/portal/migration/{token.code}/").content.decode()
    # The stored lines are English (staff); a French reader gets the same gaps in French.
    french = client.get(f"/portal/migration/{token.code}/", HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "La connexion ne permet pas : Vider le cache de Cloudflare pour vos sites" in french
    assert "does not allow" not in french
    token.refresh_from_db()
    assert token.parity_diff[0].startswith("The connection does not allow: ")
    with pytest.raises(services.MigrationError, match="waits for parity"):
        services.cutover(token=token, by=agency_admin)
    with pytest.raises(services.MigrationError, match="reason"):
        services.parity_override(token=token, by=agency_admin, reason="ok")
    services.parity_override(token=token, by=agency_admin, reason="Client purges the cache from their CMS now.")
    services.cutover(token=ApiToken.objects.get(pk=token.pk), by=agency_admin)
    token.refresh_from_db()
    assert token.state == "cut_over" and token.override_by == agency_admin
    override = token.events.get(kind="parity_override")
    assert override.message == "Client purges the cache from their CMS now." and override.detail["diff"]

    # The token cannot delete itself: the client is asked, in the portal and by email.
    services.removal_start(token=token, by=agency_admin)
    token.refresh_from_db()
    assert token.state == "removing" and token.status == "active"
    assert "Please delete the old Cloudflare API token" in mailoutbox[-1].subject
    assert "My Profile → API Tokens" in mailoutbox[-1].body
    portal = client.get(f"/portal/migration/{token.code}/").content.decode()
    assert "Please delete the old API token" in portal and "delete-steps" in portal

    # Beyond the window with both still working: an alert, once.
    ApiToken.objects.filter(pk=token.pk).update(standby_until=timezone.now() - timedelta(hours=1))
    assert services.migration_sweep()["overdue"] == 1
    assert services.migration_sweep()["overdue"] == 0
    assert TokenAlert.objects.filter(token=token, kind="both_active", resolved_at=None).count() == 1

    cf_sandbox.delete_api_token(token.issued["id"])  # the client deletes it in the dashboard
    services.api_token_verify(token_id=token.pk)
    token.refresh_from_db()
    assert token.state == "removed" and token.status == "erased" and token.removal_how == "verified_gone"
    assert not TokenAlert.objects.filter(token=token, resolved_at=None).exists()


def test_a_token_with_a_permission_oauth_lacks_is_blocked_then_kept_as_internal_automation(
    cf_sandbox, cf_app, acme, admin_client, agency_admin
):
    token = sandbox_token(
        cf_sandbox, acme, name="tunnel bot", permissions=["API Tokens Read", "Zone Read", "Cloudflare Tunnel Write"]
    )
    assert token.blockers[0][0] == "Cloudflare Tunnel Write"
    with pytest.raises(services.MigrationError, match="no OAuth scope"):
        services.migration_invite(token=token, sent_by=agency_admin)
    response = admin_client.post(
        "/admin/apitokens/apitoken/", {"action": "keep_internal", "_selected_action": [token.pk]}
    )
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.purpose == "internal" and token.events.filter(kind="kept_internal").exists()
    board = admin_client.get("/admin/apitokens/apitoken/board/").content.decode()
    internal = board[board.index('id="internal"') :]
    assert "tunnel bot" in internal and "Cloudflare Tunnel Write" in internal and "never" in internal
    # Internal automation never runs the client's actions: without a grant there is no credential.
    refused = action_run(actor=Actor(user=agency_admin), action_id="user.read", client=acme, inputs={})
    assert refused.outcome == "refused" and "no working Cloudflare connection" in refused.reason
