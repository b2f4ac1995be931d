"""The verification run of an OAuth app: evidence that it is fit for production zones.

Steps, each recorded with its evidence and time (the run stops at the first failure, loudly):

1. Identity: the app's name and publisher domain as Cloudflare shows them, read from the consent
   page; where Cloudflare asks to sign in first (the page cannot be read), a staff member's
   recorded confirmation stands in.
2. Scope audit: every scope the app requests is used by some catalogue action.
3. Test connection: a test client's live grant of this app (connected by a test user with a
   non-production Cloudflare account).
4. Every read action the grant's scopes allow, run once.
5. Every write action, reversibly on the test zone: a TXT record created, changed and deleted;
   a cache purge of one URL.
6. Disconnect: the refresh token is revoked at Cloudflare (RFC 7009), as a disconnect does.
7. Probes with the old access token and the old refresh token until the refresh window has
   passed: each must be refused; one that still works fails the run ("access outlives the revoke").
   The old tokens are held in memory only for the probes, never stored.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from django.conf import settings
from django.utils import timezone

from clients.models import Client, Zone
from connections import cloudflare
from connections.models import Grant, OAuthApp
from connections.services import consent
from connections.services.disconnect import grant_disconnect
from operations.catalogue import actions_for_scopes, unused_scopes
from operations.gate import Actor, grant_is_usable
from operations.services import action_run

from .models import VerificationRun

logger = logging.getLogger(__name__)


class _Stop(Exception):
    pass


def app_verified(app: OAuthApp) -> bool:
    last = app.verification_runs.exclude(outcome=VerificationRun.Outcome.RUNNING).order_by("-started_at").first()
    return last is not None and last.outcome == VerificationRun.Outcome.PASSED


def verification_run(
    *, app: OAuthApp, test_client: Client, test_zone: Zone, staff, name_confirmed: bool = False
) -> VerificationRun:
    run = VerificationRun.objects.create(app=app, started_by=staff)
    steps: list[dict[str, Any]] = []

    def step(name: str, ok: bool, evidence: str) -> None:
        steps.append({"step": name, "ok": ok, "evidence": evidence[:2000], "at": timezone.now().isoformat()})
        VerificationRun.objects.filter(pk=run.pk).update(steps=steps)
        if not ok:
            logger.warning("verification run %s of app %s failed at %s: %s", run.pk, app.pk, name, evidence[:200])
            raise _Stop(name)

    outcome = VerificationRun.Outcome.PASSED
    try:
        _identity(app, staff, name_confirmed, run, step)
        unused = unused_scopes(app.all_scopes)
        step(
            "scope_audit",
            not unused,
            "Every requested scope is used by an action" if not unused else f"Unused: {unused}",
        )
        grant = (
            Grant.objects.filter(client=test_client, app=app)
            .order_by("-authorized_at")
            .prefetch_related("accounts")
            .first()
        )
        ok = grant is not None and grant_is_usable(grant) and test_zone.account.client_id == test_client.pk
        step(
            "test_connection",
            ok,
            f"{test_client.name}: grant of {grant.cf_user_email}, zone {test_zone.name}"
            if ok
            else "No live test grant",
        )
        actor = Actor(user=staff, via="staff", label="verification run")
        _reads(actor, grant, test_client, test_zone, step)
        _writes(actor, grant, test_client, test_zone, step)
        _disconnect_and_probe(app, grant, staff, step)
    except _Stop:
        outcome = VerificationRun.Outcome.FAILED
    VerificationRun.objects.filter(pk=run.pk).update(outcome=outcome, finished_at=timezone.now(), steps=steps)
    run.refresh_from_db()
    return run


def _identity(app, staff, name_confirmed, run, step) -> None:
    verifier, challenge = consent.pkce_pair()
    url = cloudflare.authorize_url(
        client_id=app.client_id,
        redirect_uri=app.redirect_uri,
        scopes=app.all_scopes,
        state=secrets.token_urlsafe(24),
        code_challenge=challenge,
    )
    try:
        page = cloudflare.consent_page(url)
    except cloudflare.CloudflareError as exc:
        page = None
        logger.info("verification run %s: consent page unreadable (%s)", run.pk, type(exc).__name__)
    if page is not None and app.name in page and (not app.publisher_domain or app.publisher_domain in page):
        step("identity", True, f"Consent page shows {app.name} by {app.publisher_domain}")
        return
    if page is not None:
        step("identity", False, "The consent page does not show the app's name and publisher domain")
    if name_confirmed:
        VerificationRun.objects.filter(pk=run.pk).update(name_confirmed_by=staff)
        who = getattr(staff, "username", "staff")
        step("identity", True, f"Consent page needs sign-in; {who} confirmed {app.name} by {app.publisher_domain}")
        return
    step("identity", False, "The consent page cannot be read and no staff member confirmed the name and domain")


def _reads(actor, grant, client, zone, step) -> None:
    allowed, _ = actions_for_scopes(grant.granted_scopes)
    for action in [a for a in allowed if a.is_read]:
        target = {"zone": {"zone": zone}, "account": {"account": zone.account}}.get(action.target, {})
        record = action_run(actor=actor, action_id=action.id, client=client, inputs={}, **target)
        step(f"read:{action.id}", record.succeeded, record.reason or "succeeded")


def _writes(actor, grant, client, zone, step) -> None:
    allowed, _ = actions_for_scopes(grant.granted_scopes)
    ids = {a.id for a in allowed if not a.is_read}
    if {"dns.record.create", "dns.record.update", "dns.record.delete"} <= ids:
        name = f"_portal-verify-{secrets.token_hex(4)}"
        created = action_run(
            actor=actor,
            action_id="dns.record.create",
            client=client,
            zone=zone,
            inputs={"type": "TXT", "name": name, "content": "verification run"},
        )
        step("write:dns.record.create", created.succeeded, created.reason or f"TXT {name} created")
        record_id = created.result["record_id"]
        changed = action_run(
            actor=actor,
            action_id="dns.record.update",
            client=client,
            zone=zone,
            inputs={"record_id": record_id, "content": "verification run (changed)"},
        )
        step("write:dns.record.update", changed.succeeded, changed.reason or "TXT changed")
        deleted = action_run(
            actor=actor, action_id="dns.record.delete", client=client, zone=zone, inputs={"record_id": record_id}
        )
        step("write:dns.record.delete", deleted.succeeded, deleted.reason or "TXT deleted (reversed)")
    if "cache.purge" in ids:
        purged = action_run(
            actor=actor,
            action_id="cache.purge",
            client=client,
            zone=zone,
            inputs={"mode": "urls", "values": [f"https://{zone.name}/portal-verification"]},
        )
        step("write:cache.purge", purged.succeeded, purged.reason or "one URL purged")


def _disconnect_and_probe(app, grant, staff, step) -> None:
    access, refresh = Grant.objects.filter(pk=grant.pk).values_list("access_token", "refresh_token").get()
    try:
        cloudflare.revoke(app=app, token=refresh, token_type_hint="refresh_token")
    except cloudflare.CloudflareError as exc:
        step("disconnect", False, f"Revocation failed: {exc}")
    grant_disconnect(grant=grant, actor=staff, actor_type="staff")
    step("disconnect", True, "Refresh token revoked at Cloudflare; grant disconnected in the portal")
    deadline = time.monotonic() + settings.VERIFICATION_PROBE_WINDOW
    probes = 0
    while True:
        probes += 1
        try:
            cloudflare.get_user(access_token=access)
            step("probe", False, f"Access outlives the revoke: the old access token still works (probe {probes})")
        except cloudflare.ApiError as exc:
            if not exc.is_auth_error and exc.status not in (401, 403):
                step("probe", False, f"Unexpected answer to the old access token: {exc}")
        except cloudflare.CloudflareError as exc:
            step("probe", False, f"Could not probe the old access token ({exc}): nothing proven, run again")
        try:
            renewed = cloudflare.refresh(app=app, refresh_token=refresh)
        except cloudflare.InvalidGrant:
            pass
        except cloudflare.CloudflareError as exc:
            step("probe", False, f"Could not probe the old refresh token ({exc}): nothing proven, run again")
        else:
            for token, hint in ((renewed.refresh_token, "refresh_token"), (renewed.access_token, "access_token")):
                if token:
                    cloudflare.revoke(app=app, token=token, token_type_hint=hint)
            step("probe", False, f"Access outlives the revoke: the old refresh token still refreshes (probe {probes})")
        if time.monotonic() >= deadline:
            break
        time.sleep(settings.VERIFICATION_PROBE_INTERVAL)
    step("access_gone", True, f"Old access and refresh tokens refused in {probes} probes over the refresh window")
