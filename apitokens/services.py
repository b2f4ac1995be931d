"""Writes of the migration: inventory and import, verify, invite, parity, cutover, rollback, removal.

Every call to Cloudflare goes through `connections.cloudflare` (timeouts, no hidden retries,
envelope parsing) and happens outside any transaction; the outcome is written afterwards. No
function here logs or stores a token: rows keep its ciphertext and SHA-256 fingerprint only.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.utils import timezone, translation
from django.utils.dateparse import parse_datetime

from clients.language import addresses_by_language
from clients.models import Client, ClientMember, CloudflareAccount, Zone
from connections import cloudflare, crypto
from connections.models import LIVE_STATUSES, Grant

from .mapping import group_name, token_mapping
from .models import ApiToken, ApiTokenEvent, TokenAlert

logger = logging.getLogger(__name__)

State = ApiToken.State
Status = ApiToken.Status
# A Cloudflare API token: printable, no spaces; user tokens are `cfut_` + 40, account tokens `cfat_` + 40,
# older tokens 40 characters without a prefix.
TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]{30,200}$")
CSV_COLUMNS = ("client", "name", "token", "purpose", "account_id", "permissions", "notes")
MAX_CSV_ROWS = 2000


class MigrationError(Exception):
    """A migration step refused, with a sentence for staff. Nothing was changed."""


def event_record(*, token: ApiToken, kind: str, message: str = "", actor=None, **detail: Any) -> ApiTokenEvent:
    return ApiTokenEvent.objects.create(
        token=token, client_id=token.client_id, kind=kind, actor=actor, message=message[:1000], detail=detail
    )


# --- 1. Inventory ---------------------------------------------------------------------------------


def _clean_permissions(values: list[str]) -> list[str]:
    names = []
    for value in values:
        if not value.strip():
            continue
        name = group_name(value)
        if name is None:
            raise ValidationError(f"{value.strip()!r} is not a permission group the portal knows.")
        names.append(name)
    return list(dict.fromkeys(names))


def api_token_validate(
    *, client: Client | None, name: str, token: str, purpose: str, owner_account_id: str = "", permissions=()
) -> dict[str, Any]:
    """Check one token's fields; raise ValidationError with a sentence (the token never in it)."""
    if client is None:
        raise ValidationError("No such client.")
    name = (name or "").strip()
    if not name:
        raise ValidationError("Give the token's name as it appears in Cloudflare's dashboard.")
    token = (token or "").strip()
    if not TOKEN_RE.match(token):
        raise ValidationError("The token is not shaped like a Cloudflare API token (30–200 letters, digits, _ or -).")
    if purpose not in ApiToken.Purpose.values:
        raise ValidationError("Purpose must be 'customer' (customer-delegated) or 'internal' (internal automation).")
    owner_account_id = (owner_account_id or "").strip()
    is_account = token.startswith("cfat_") or bool(owner_account_id)
    if token.startswith("cfat_") and not owner_account_id:
        raise ValidationError("An account-owned token (cfat_…) needs the ID of the account that owns it.")
    if owner_account_id and not re.fullmatch(r"[0-9a-f]{32}", owner_account_id):
        raise ValidationError("The account ID is 32 hexadecimal characters.")
    fingerprint = crypto.fingerprint(token)
    if ApiToken.objects.filter(token_fp=fingerprint).exists():
        raise ValidationError("This token is already in the portal.")
    return {
        "client": client,
        "name": name[:200],
        "token": token,
        "purpose": purpose,
        "owner": ApiToken.Owner.ACCOUNT if is_account else ApiToken.Owner.USER,
        "owner_account_id": owner_account_id,
        "declared_permissions": _clean_permissions(list(permissions)),
    }


def _create(fields: dict[str, Any], *, created_by, notes: str = "", source: str) -> ApiToken:
    secret = fields.pop("token")
    token = ApiToken(**fields, notes=notes[:500], created_by=created_by, next_verify_at=timezone.now())
    token.set_token(secret)
    token.save()
    event_record(
        token=token,
        kind="imported",
        actor=created_by,
        message=f"Recorded by {getattr(created_by, 'username', 'the system')} ({source})",
        purpose=token.purpose,
        fingerprint=token.fingerprint_short,
    )
    _enqueue_verify(token.pk)
    return token


def api_token_create(
    *,
    client: Client,
    name: str,
    token: str,
    purpose: str,
    created_by,
    owner_account_id: str = "",
    permissions=(),
    notes: str = "",
) -> ApiToken:
    fields = api_token_validate(
        client=client,
        name=name,
        token=token,
        purpose=purpose,
        owner_account_id=owner_account_id,
        permissions=permissions,
    )
    try:
        with transaction.atomic():
            return _create(fields, created_by=created_by, notes=notes, source="admin form")
    except IntegrityError as exc:  # a concurrent import of the same token
        raise ValidationError("This token is already in the portal.") from exc


@dataclass
class ImportRow:
    line: int
    client: str
    name: str
    purpose: str
    fingerprint: str = ""
    error: str = ""
    fields: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not self.error


def csv_preview(text: str) -> list[ImportRow]:
    """Parse and check every row; nothing is written. A bad row says why (never with its token)."""
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in ("client", "name", "token", "purpose") if c not in header]
    if missing:
        return [ImportRow(line=1, client="", name="", purpose="", error=f"Missing column(s): {', '.join(missing)}.")]
    reader.fieldnames = header
    clients = {c.slug: c for c in Client.objects.all()}
    rows: list[ImportRow] = []
    seen: set[str] = set()
    for number, raw in enumerate(reader, start=2):
        if number - 1 > MAX_CSV_ROWS:
            rows.append(ImportRow(line=number, client="", name="", purpose="", error=f"More than {MAX_CSV_ROWS} rows."))
            break
        value = {k: (v or "").strip() for k, v in raw.items() if k}
        row = ImportRow(line=number, client=value.get("client", ""), name=value.get("name", ""), purpose="")
        row.purpose = value.get("purpose", "").lower()
        try:
            fields = api_token_validate(
                client=clients.get(row.client),
                name=row.name,
                token=value.get("token", ""),
                purpose=row.purpose,
                owner_account_id=value.get("account_id", ""),
                permissions=value.get("permissions", "").split(";"),
            )
            fingerprint = crypto.fingerprint(fields["token"])
            if fingerprint in seen:
                raise ValidationError("The same token appears twice in this file.")
            seen.add(fingerprint)
            row.fingerprint = f"sha256:{fingerprint[:12]}"
            row.fields = {**fields, "notes": value.get("notes", "")}
        except ValidationError as exc:
            row.error = " ".join(exc.messages)
        rows.append(row)
    return rows


def csv_import(rows: list[ImportRow], *, created_by, source: str = "CSV import") -> list[ApiToken]:
    """Import the valid rows of a preview, all in one transaction (all of them or none)."""
    created = []
    with transaction.atomic():
        for row in rows:
            if row.ok:
                fields = dict(row.fields)
                notes = fields.pop("notes", "")
                created.append(_create(fields, created_by=created_by, notes=notes, source=source))
    return created


# --- 2. Verify --------------------------------------------------------------------------------------


@dataclass
class VerifyFindings:
    valid: bool
    cf_status: str = ""
    cf_token_id: str = ""
    expires_on: datetime | None = None
    not_before: datetime | None = None
    issued_on: datetime | None = None
    groups: list[str] | None = None
    source: str = ""
    accounts: list[dict[str, str]] = field(default_factory=list)
    zones: list[dict[str, str]] = field(default_factory=list)


def _when(value: Any) -> datetime | None:
    return parse_datetime(value) if isinstance(value, str) and value else None


def _verify_path(token: ApiToken) -> str:
    if token.owner == ApiToken.Owner.ACCOUNT:
        return f"/accounts/{token.owner_account_id}/tokens/verify"
    return "/user/tokens/verify"


def _token_path(token: ApiToken, token_id: str) -> str:
    if token.owner == ApiToken.Owner.ACCOUNT:
        return f"/accounts/{token.owner_account_id}/tokens/{token_id}"
    return f"/user/tokens/{token_id}"


def _get(path: str, secret: str, **params: Any) -> Any | None:
    """One read; None when the token may not read it (auth error), other errors raise."""
    try:
        return cloudflare.api_request("GET", path, access_token=secret, params=params or None)["result"]
    except cloudflare.ApiError as exc:
        if exc.is_auth_error or exc.status in (401, 403):
            return None
        raise


def _list(path: str, secret: str) -> list[dict] | None:
    try:
        return cloudflare.api_list(path, access_token=secret)
    except cloudflare.ApiError as exc:
        if exc.is_auth_error or exc.status in (401, 403):
            return None
        raise


def _probe(token: ApiToken, secret: str, zones: list[dict]) -> list[str]:
    """Infer permission groups with read-only calls (never a write): each answers one group."""
    found = []
    if _get("/user", secret) is not None:
        found.append("User Details Read")
    if _get("/accounts", secret, per_page=5) is not None:
        found.append("Account Settings Read")
    if zones:
        found.append("Zone Read")
        first = zones[0]["id"]
        if _get(f"/zones/{first}/dns_records", secret, per_page=5) is not None:
            found.append("DNS Read")
        if _get(f"/zones/{first}/settings", secret) is not None:
            found.append("Zone Settings Read")
    if token.owner == ApiToken.Owner.USER and _get("/user/tokens", secret, per_page=5) is not None:
        found.append("API Tokens Read")
    return found


def _read_token(token: ApiToken, secret: str) -> VerifyFindings:
    """The calls of a verification, all reads. Raises cloudflare's transient errors."""
    try:
        result = cloudflare.api_request("GET", _verify_path(token), access_token=secret)["result"]
    except cloudflare.ApiError as exc:
        if exc.status in (400, 401, 403) or 1000 in exc.codes or exc.is_auth_error:
            return VerifyFindings(valid=False)
        raise
    findings = VerifyFindings(
        valid=True,
        cf_status=str(result.get("status") or ""),
        cf_token_id=str(result.get("id") or ""),
        expires_on=_when(result.get("expires_on")),
        not_before=_when(result.get("not_before")),
    )
    if findings.cf_status != "active":
        return findings
    zones = _list("/zones", secret) or []
    findings.zones = [
        {"id": z["id"], "name": z.get("name", ""), "account_id": (z.get("account") or {}).get("id", "")} for z in zones
    ]
    accounts: dict[str, str] = {}
    for z in zones:
        account = z.get("account") or {}
        if account.get("id"):
            accounts[account["id"]] = account.get("name", "")
    listed = _list("/accounts", secret)
    for a in listed or []:
        accounts.setdefault(a["id"], a.get("name", ""))
    if token.owner == ApiToken.Owner.ACCOUNT:
        accounts.setdefault(token.owner_account_id, "")
    findings.accounts = [{"id": k, "name": v} for k, v in accounts.items()]
    details = _get(_token_path(token, findings.cf_token_id), secret) if findings.cf_token_id else None
    if isinstance(details, dict) and isinstance(details.get("policies"), list):
        findings.source = ApiToken.Source.TOKEN
        findings.issued_on = _when(details.get("issued_on"))
        findings.groups = list(
            dict.fromkeys(
                g.get("name", "")
                for p in details["policies"]
                if p.get("effect") == "allow"
                for g in p.get("permission_groups") or []
                if g.get("name")
            )
        )
    else:
        findings.source = ApiToken.Source.PROBES
        findings.groups = _probe(token, secret, zones)
    return findings


def _status_from(findings: VerifyFindings, token: ApiToken, now: datetime) -> str:
    if findings.valid:
        if findings.cf_status == "active":
            if findings.not_before and findings.not_before > now:
                return Status.NOT_YET_VALID
            return Status.ACTIVE
        return {"expired": Status.EXPIRED, "disabled": Status.DISABLED}.get(findings.cf_status, Status.INVALID)
    # Refused without a status: an expiry we know of explains it; otherwise revoked or deleted.
    if token.expires_on is not None and token.expires_on <= now:
        return Status.EXPIRED
    if token.not_before is not None and token.not_before > now:
        return Status.NOT_YET_VALID
    return Status.INVALID


def _upsert_reach(token: ApiToken, findings: VerifyFindings, now: datetime) -> None:
    """The token's accounts and zones become the client's (as a grant's consent does), so staff
    pages and the gate can name them before any grant exists."""
    names = {a["id"]: a["name"] for a in findings.accounts}
    by_id = {}
    for account_id, name in names.items():
        account, _ = CloudflareAccount.objects.get_or_create(
            client_id=token.client_id,
            cf_account_id=account_id,
            defaults={"name": name or account_id, "last_seen_at": now},
        )
        by_id[account_id] = account
    for z in findings.zones:
        account = by_id.get(z["account_id"])
        if account is None:
            continue
        Zone.objects.get_or_create(
            account=account, cf_zone_id=z["id"], defaults={"name": z["name"], "status": "active", "last_seen_at": now}
        )


def api_token_verify(*, token_id: int) -> ApiToken | None:
    """Verify one token at Cloudflare and record what was found (status, expiry, groups, reach).

    1. Read the token row (with its secret); an erased token is skipped.
    2. The calls, outside any transaction: verify, then (if active) zones, accounts, and the
       token's own policies when it may read them, else read-only probes.
    3. An outage records the error and retries later: it never changes the status.
    4. Write the findings; a change of status writes an event, and "expired" / "revoked" opens an
       alert (resolved when it works again). A token being removed that no longer works is
       recorded as gone and erased.
    """
    token = ApiToken.objects.filter(pk=token_id).exclude(status=Status.ERASED).first()
    if token is None:
        return None
    now = timezone.now()
    interval = timedelta(seconds=settings.API_TOKEN_VERIFY_INTERVAL)
    try:
        findings = _read_token(token, token.token)
    except cloudflare.CloudflareError as exc:
        ApiToken.objects.filter(pk=token.pk).update(
            last_error=str(exc)[:500], next_verify_at=now + min(interval, timedelta(minutes=15))
        )
        logger.info("api token verify: token=%s outcome=transient", token.pk)
        return token
    status = _status_from(findings, token, now)
    old_status = token.status
    token.status = status
    token.last_verified_at = now
    token.next_verify_at = now + interval
    token.last_error = ""
    if findings.valid:
        token.cf_token_id = findings.cf_token_id or token.cf_token_id
        token.expires_on = findings.expires_on
        token.not_before = findings.not_before
        token.issued_on = findings.issued_on or token.issued_on
    if findings.groups is not None:
        groups = list(findings.groups)
        if findings.source == ApiToken.Source.PROBES:
            # Writes cannot be seen without a write: what staff declared is kept beside the probes.
            groups += [g for g in token.declared_permissions if g not in groups]
        token.permission_groups = groups
        token.permissions_source = findings.source
        token.reach_accounts = findings.accounts
        token.reach_zones = findings.zones
        mapping = token_mapping(groups)
        token.mapped_scopes = list(mapping.scopes)
        token.blockers = [list(b) for b in mapping.blockers]
    with transaction.atomic():
        token.save()
        if findings.groups is not None:
            _upsert_reach(token, findings, now)
        if status != old_status:
            event_record(
                token=token,
                kind="verified",
                message=f"Status {ApiToken.Status(old_status).label} → {ApiToken.Status(status).label}",
                status=status,
                source=findings.source,
            )
        _alerts_after_verify(token, status)
    if token.state == State.REMOVING and status in (Status.INVALID, Status.EXPIRED, Status.DISABLED):
        api_token_erase(token=token, actor=None, how="verified_gone", message="The token no longer works at Cloudflare")
    logger.info("api token verify: token=%s status=%s", token.pk, status)
    return token


def _alerts_after_verify(token: ApiToken, status: str) -> None:
    removing = token.state in (State.REMOVING, State.REMOVED)
    if status == Status.ACTIVE:
        TokenAlert.objects.filter(
            token=token, kind__in=[TokenAlert.Kind.EXPIRED, TokenAlert.Kind.INVALID], resolved_at__isnull=True
        ).update(resolved_at=timezone.now())
    elif status == Status.EXPIRED and not removing:
        alert_open(token=token, kind=TokenAlert.Kind.EXPIRED, message=f"The API token {token.name} has expired.")
    elif status in (Status.INVALID, Status.DISABLED) and not removing:
        alert_open(
            token=token,
            kind=TokenAlert.Kind.INVALID,
            message=f"The API token {token.name} no longer works at Cloudflare (revoked, deleted or disabled).",
        )


def alert_open(*, token: ApiToken, kind: str, message: str) -> TokenAlert | None:
    """Open one alert per token and kind (the unique constraint makes a repeat a no-op)."""
    try:
        with transaction.atomic():
            alert = TokenAlert.objects.create(token=token, client_id=token.client_id, kind=kind, message=message[:500])
    except IntegrityError:
        return None
    transaction.on_commit(lambda: _enqueue("deliver_token_alert_task", alert.pk))
    return alert


def _enqueue(task_name: str, *args: Any) -> None:
    from . import tasks  # tasks import this module

    try:
        getattr(tasks, task_name).delay(*args)
    except Exception:  # noqa: BLE001 - the beat sweep finds the row again
        logger.warning("could not enqueue %s; the sweep will pick it up", task_name)


def _enqueue_verify(token_id: int) -> None:
    transaction.on_commit(lambda: _enqueue("verify_api_token_task", token_id))


# --- 3./4. Map and invite -------------------------------------------------------------------------


def requested_scopes(*, token: ApiToken, app) -> list[str]:
    """What the migration consent asks for: offline_access, the scopes the agency's app requires of
    every connection (without them the grant would need re-consent at once), and the token's mapped
    scopes."""
    required = list(app.required_scopes) if app is not None else []
    return list(dict.fromkeys(["offline_access", *required, *token.mapped_scopes]))


def migration_invite(*, token: ApiToken, sent_by, email: str = "") -> ApiToken:
    """Email the client contact a migration invitation (the portal page explains, then connects)."""
    if token.purpose != ApiToken.Purpose.CUSTOMER:
        raise MigrationError("Internal automation tokens are kept, not migrated.")
    if token.blockers:
        groups = ", ".join(b[0] for b in token.blockers)
        raise MigrationError(
            f"This token holds permissions with no OAuth scope ({groups}): keep it as internal automation."
        )
    if token.status != Status.ACTIVE or not token.mapped_scopes:
        raise MigrationError("Verify the token first: only a working token with known permissions can be migrated.")
    if token.state not in (State.TOKEN_ONLY, State.INVITED):
        raise MigrationError("This client has already connected.")
    from connections.services.consent import oauth_app_default

    app = oauth_app_default()
    if app is None:
        raise MigrationError("There is no active default OAuth app to connect with.")
    outside = [s for s in token.mapped_scopes if s not in app.all_scopes]
    if outside:
        raise MigrationError(f"The agency's OAuth app does not request {', '.join(outside)}: add it to the app first.")
    contacts = list(
        ClientMember.objects.filter(client_id=token.client_id, role=ClientMember.Role.OWNER)
        .select_related("user")
        .values_list("user__email", flat=True)
    )
    recipients = [email] if email else [c for c in contacts if c]
    if not recipients:
        raise MigrationError("The client has no contact who can connect: invite one from the client page first.")
    now = timezone.now()
    with transaction.atomic():
        ApiToken.objects.filter(pk=token.pk).update(
            state=State.INVITED, state_changed_at=now, invited_at=now, invited_email=recipients[0]
        )
        token.refresh_from_db()
        event_record(token=token, kind="invited", actor=sent_by, message=f"Invitation sent to {', '.join(recipients)}")
    context = {"token": token, "client": token.client, "url": settings.SITE_URL + _portal_url(token)}
    _send_in_languages("invite", context, recipients, client_id=token.client_id)
    return token


def _send_in_languages(name: str, context: dict, recipients: list[str], *, client_id: int) -> None:
    """The email `name` to contacts, rendered once per language they read."""
    for language, addresses in addresses_by_language(recipients, client_id=client_id).items():
        with translation.override(language):
            subject = " ".join(render_to_string(f"apitokens/emails/{name}_subject.txt", context).split())
            body = render_to_string(f"apitokens/emails/{name}_body.txt", context)
        send_mail(subject, body, None, addresses)


def _portal_url(token: ApiToken) -> str:
    from django.urls import reverse

    return reverse("apitokens:migration", args=[token.code])


# --- 5. Parity --------------------------------------------------------------------------------------


def _live_grant_for(token: ApiToken) -> Grant | None:
    grants = Grant.objects.filter(client_id=token.client_id, status__in=LIVE_STATUSES).order_by("-authorized_at")
    if token.invited_at is not None:
        grants = grants.filter(authorized_at__gte=token.invited_at)
    return grants.first()


@dataclass(frozen=True)
class ParityGaps:
    """What a grant lacks compared with the API token it replaces (all empty: parity)."""

    scopes: list[str]
    accounts: list[str]  # names, or ids where Cloudflare gave no name
    zones: list[str]

    def lines(self) -> list[str]:
        """The gaps in plain words, in the active language."""
        from connections.scopes import describe

        lines = []
        if self.scopes:
            what = "; ".join(describe(s) for s in self.scopes)
            lines.append(translation.gettext("The connection does not allow: %(what)s.") % {"what": what})
        if self.accounts:
            names = ", ".join(self.accounts)
            lines.append(
                translation.gettext("The connection does not reach the account(s): %(names)s.") % {"names": names}
            )
        if self.zones:
            names = ", ".join(self.zones)
            lines.append(
                translation.gettext("The connection does not reach the zone(s): %(names)s.") % {"names": names}
            )
        return lines


def parity_gaps(*, token: ApiToken, grant: Grant) -> ParityGaps:
    """Compare the grant's scopes and reach with the token's. Two queries (accounts, zones)."""
    granted = set(grant.granted_scopes)
    reached = {a.cf_account_id for a in grant.accounts.all()}
    zones = set(
        Zone.objects.filter(account__grants=grant, removed_at__isnull=True).values_list("cf_zone_id", flat=True)
    )
    return ParityGaps(
        scopes=[s for s in token.mapped_scopes if s not in granted],
        accounts=[a.get("name") or a["id"] for a in token.reach_accounts if a["id"] not in reached],
        zones=[z.get("name") or z["id"] for z in token.reach_zones if z["id"] not in zones],
    )


def parity_check(*, token: ApiToken) -> ApiToken:
    """Link the client's new grant and compare it with the token. Database only, no call."""
    return parity_check_gaps(token=token)[0]


def parity_check_gaps(*, token: ApiToken) -> tuple[ApiToken, ParityGaps | None]:
    """`parity_check`, also returning the gaps it found (None: nothing was compared), for a page
    that words them in its reader's language. The token stores them in English, for staff."""
    if token.state not in (State.INVITED, State.CONNECTED, State.PARITY):
        return token, None
    grant = _live_grant_for(token)
    if grant is None:
        return token, None
    now = timezone.now()
    gaps = parity_gaps(token=token, grant=grant)
    with translation.override("en"):
        diff = gaps.lines()  # [] = parity
    with transaction.atomic():
        if token.grant_id != grant.pk or token.state == State.INVITED:
            event_record(token=token, kind="connected", message=f"Connected as {grant.cf_user_email}", grant=grant.pk)
        new_state = State.PARITY if not diff or token.override_reason else State.CONNECTED
        if new_state == State.PARITY and token.state != State.PARITY:
            event_record(token=token, kind="parity", message="The connection covers the token's reach and permissions")
        elif diff and diff != token.parity_diff:
            event_record(token=token, kind="parity_failed", message=" ".join(diff))
        ApiToken.objects.filter(pk=token.pk).update(
            grant=grant,
            state=new_state,
            state_changed_at=now if new_state != token.state else token.state_changed_at,
            parity_diff=diff,
            parity_checked_at=now,
        )
    token.refresh_from_db()
    return token, gaps


def parity_override(*, token: ApiToken, by, reason: str) -> ApiToken:
    """Staff accept a failed parity with a written reason (recorded)."""
    reason = " ".join((reason or "").split())
    if len(reason) < 10:
        raise MigrationError("Write the reason for the override (at least 10 characters).")
    if token.state != State.CONNECTED or token.grant_id is None:
        raise MigrationError("An override applies to a connected client whose parity failed.")
    with transaction.atomic():
        ApiToken.objects.filter(pk=token.pk).update(
            state=State.PARITY, state_changed_at=timezone.now(), override_reason=reason[:1000], override_by=by
        )
        token.refresh_from_db()
        event_record(token=token, kind="parity_override", actor=by, message=reason, diff=token.parity_diff)
    return token


# --- 6. Cutover and rollback -----------------------------------------------------------------------


def cutover(*, token: ApiToken, by) -> ApiToken:
    if token.state != State.PARITY:
        raise MigrationError("Cutover waits for parity (or a recorded override).")
    if token.grant is None or token.grant.status not in LIVE_STATUSES:
        raise MigrationError("The client's connection is not live: ask them to reconnect first.")
    now = timezone.now()
    with transaction.atomic():
        ApiToken.objects.filter(pk=token.pk, state=State.PARITY).update(
            state=State.CUT_OVER,
            state_changed_at=now,
            cut_over_at=now,
            standby_until=now + timedelta(days=settings.MIGRATION_ROLLBACK_WINDOW_DAYS),
            reminder_sent_at=None,
        )
        token.refresh_from_db()
        event_record(
            token=token,
            kind="cut_over",
            actor=by,
            message=f"Actions now run with the connection; the token is on standby until {token.standby_until:%Y-%m-%d}",
        )
    return token


def rollback(*, token: ApiToken, by, reason: str = "") -> ApiToken:
    """Back to the token within the window: actions run with it again at once."""
    now = timezone.now()
    if token.state != State.CUT_OVER or token.standby_until is None or token.standby_until <= now:
        raise MigrationError("Rollback is possible only while the token is on standby.")
    if token.status != Status.ACTIVE:
        raise MigrationError("The token no longer works at Cloudflare: it cannot be used again.")
    with transaction.atomic():
        ApiToken.objects.filter(pk=token.pk, state=State.CUT_OVER).update(state=State.PARITY, state_changed_at=now)
        token.refresh_from_db()
        event_record(token=token, kind="rolled_back", actor=by, message=reason or "Rolled back to the API token")
        TokenAlert.objects.filter(token=token, resolved_at__isnull=True).update(resolved_at=now)
    return token


# --- 7. Removal -------------------------------------------------------------------------------------


def api_token_erase(*, token: ApiToken, actor, how: str, message: str) -> ApiToken:
    """Erase the secret from the database (the row stays, with its fingerprint and its trail)."""
    now = timezone.now()
    with transaction.atomic():
        ApiToken.objects.filter(pk=token.pk).update(
            token="",
            status=Status.ERASED,
            state=State.REMOVED if token.purpose == ApiToken.Purpose.CUSTOMER else token.state,
            state_changed_at=now,
            removed_at=now,
            removal_how=how,
            next_verify_at=None,
        )
        token.refresh_from_db()
        event_record(token=token, kind="erased", actor=actor, message=message, how=how)
        TokenAlert.objects.filter(token=token, resolved_at__isnull=True).update(resolved_at=now)
    return token


def removal_start(*, token: ApiToken, by) -> ApiToken:
    """After cutover: delete the token at Cloudflare when it may delete itself, then erase it;
    otherwise ask the client to delete it and verify later that it no longer works."""
    if token.state != State.CUT_OVER:
        raise MigrationError("Removal follows the cutover.")
    if token.can_delete_itself and token.cf_token_id:
        secret = token.token
        try:
            cloudflare.api_request("DELETE", _token_path(token, token.cf_token_id), access_token=secret)
        except cloudflare.ApiError as exc:
            if exc.status != 404:
                raise MigrationError(f"Cloudflare refused to delete the token ({exc}).") from exc
        except cloudflare.CloudflareError as exc:
            raise MigrationError(f"Cloudflare could not be reached; try again later ({exc}).") from exc
        event_record(token=token, kind="deleted_at_cloudflare", actor=by, message="Deleted at Cloudflare by the portal")
        try:
            findings = _read_token(token, secret)
        except cloudflare.CloudflareError:
            findings = None
        if findings is not None and findings.valid and findings.cf_status == "active":
            raise MigrationError("Cloudflare still accepts the token after deleting it; try again later.")
        return api_token_erase(token=token, actor=by, how="deleted_by_portal", message="Deleted at Cloudflare, erased")
    now = timezone.now()
    with transaction.atomic():
        ApiToken.objects.filter(pk=token.pk).update(
            state=State.REMOVING, state_changed_at=now, removal_asked_at=now, next_verify_at=now
        )
        token.refresh_from_db()
        event_record(
            token=token,
            kind="removal_asked",
            actor=by,
            message="The client was asked to delete the token at Cloudflare",
        )
    _email_removal(token)
    _enqueue_verify(token.pk)
    return token


def _email_removal(token: ApiToken) -> None:
    recipients = [token.invited_email] if token.invited_email else []
    recipients += list(
        ClientMember.objects.filter(client_id=token.client_id, role=ClientMember.Role.OWNER).values_list(
            "user__email", flat=True
        )
    )
    recipients = list(dict.fromkeys(r for r in recipients if r))
    if not recipients:
        return
    context = {"token": token, "client": token.client, "url": settings.SITE_URL + _portal_url(token)}
    _send_in_languages("remove", context, recipients, client_id=token.client_id)


def migration_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Reminders before the window ends; removal after it; an alert while both stay active."""
    now = now or timezone.now()
    counts = {"reminded": 0, "removal_started": 0, "overdue": 0}
    remind_from = now + timedelta(days=settings.MIGRATION_REMINDER_DAYS)
    for token in ApiToken.objects.filter(
        state=State.CUT_OVER, reminder_sent_at__isnull=True, standby_until__lte=remind_from, standby_until__gt=now
    ).select_related("client"):
        if ApiToken.objects.filter(pk=token.pk, reminder_sent_at__isnull=True).update(reminder_sent_at=now) == 1:
            alert_open(
                token=token,
                kind=TokenAlert.Kind.WINDOW_ENDING,
                message=f"The rollback window of {token.client.name}'s token {token.name} ends on "
                f"{token.standby_until:%Y-%m-%d}; the token is removed then.",
            )
            counts["reminded"] += 1
    for token in ApiToken.objects.filter(state=State.CUT_OVER, standby_until__lte=now).select_related("client"):
        try:
            removal_start(token=token, by=None)
            counts["removal_started"] += 1
        except MigrationError as exc:
            logger.warning("migration sweep: token=%s removal not started: %s", token.pk, exc)
    from .selectors import tokens_and_grants_beyond_window

    for token in tokens_and_grants_beyond_window(now=now).select_related("client"):
        if alert_open(
            token=token,
            kind=TokenAlert.Kind.BOTH_ACTIVE,
            message=f"{token.client.name} still has a working API token ({token.name}) and a connection, "
            "after the rollback window.",
        ):
            counts["overdue"] += 1
    return counts
