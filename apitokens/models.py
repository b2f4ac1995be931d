"""API tokens the agency holds for its clients, and the migration of each onto an OAuth grant.

`ApiToken` carries the token (encrypted, fingerprint only ever shown), what verification found
(status, expiry, permission groups, reach), what it maps to (scopes, blockers) and, for a
customer-delegated token, where its migration stands. `ApiTokenEvent` is its append-only trail,
`TokenAlert` the outbox of staff notices (delivered like grant alerts). `ServiceKey` lets the
agency's own scripts act through the proxy without a Cloudflare token; `VerificationRun` is the
report of an OAuth app's verification.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from connections import crypto
from connections.fields import EncryptedTextField

# Never loaded for lists and the gate: only a verify, an action or a delete reads the token.
TOKEN_SECRET_COLUMNS = ("token",)


class ApiToken(models.Model):
    class Purpose(models.TextChoices):
        CUSTOMER = "customer", "Customer-delegated (to migrate)"
        INTERNAL = "internal", "Internal automation (kept)"

    class Owner(models.TextChoices):
        USER = "user", "User-owned"
        ACCOUNT = "account", "Account-owned"

    class Status(models.TextChoices):
        UNVERIFIED = "unverified", "Not verified yet"
        ACTIVE = "active", "Active"
        NOT_YET_VALID = "not_yet_valid", "Not valid yet (not-before in the future)"
        EXPIRED = "expired", "Expired"
        DISABLED = "disabled", "Disabled"
        INVALID = "invalid", "Revoked or deleted at Cloudflare"
        ERASED = "erased", "Erased from the portal"

    class State(models.TextChoices):
        TOKEN_ONLY = "token_only", "Token only"
        INVITED = "invited", "Invited"
        CONNECTED = "connected", "Connected"
        PARITY = "parity", "Parity"
        CUT_OVER = "cut_over", "Cut over"
        REMOVING = "removing", "Waiting for the token to be deleted"
        REMOVED = "removed", "Token removed"

    class Source(models.TextChoices):
        UNKNOWN = "", "Not verified"
        TOKEN = "token", "Read from the token"
        PROBES = "probes", "Inferred from read-only probes"

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    client = models.ForeignKey("clients.Client", on_delete=models.PROTECT, related_name="api_tokens")
    name = models.CharField(max_length=200, help_text="As the token is called in Cloudflare's dashboard.")
    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.CUSTOMER)
    owner = models.CharField(max_length=16, choices=Owner.choices, default=Owner.USER)
    # Account-owned tokens are verified under their account (`/accounts/{id}/tokens/verify`).
    owner_account_id = models.CharField("Owning account ID", max_length=64, blank=True)
    token = EncryptedTextField(blank=True, help_text="Write-only: stored encrypted, never shown.")
    token_fp = models.CharField("fingerprint", max_length=64, editable=False)
    notes = models.CharField(max_length=500, blank=True)
    # Permission groups staff declared at import (writes cannot be seen without a write).
    declared_permissions = models.JSONField(default=list, blank=True)

    # What verification found.
    cf_token_id = models.CharField("Cloudflare token ID", max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UNVERIFIED)
    issued_on = models.DateTimeField(null=True, blank=True)
    expires_on = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    permission_groups = models.JSONField(default=list, blank=True)
    permissions_source = models.CharField(max_length=8, choices=Source.choices, default="", blank=True)
    reach_accounts = models.JSONField(default=list, blank=True)  # [{"id", "name"}]
    reach_zones = models.JSONField(default=list, blank=True)  # [{"id", "name", "account_id"}]
    mapped_scopes = models.JSONField(default=list, blank=True)
    blockers = models.JSONField(default=list, blank=True)  # [[group, why]]
    last_verified_at = models.DateTimeField(null=True, blank=True)
    next_verify_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)

    # The migration (customer-delegated tokens).
    state = models.CharField(max_length=16, choices=State.choices, default=State.TOKEN_ONLY)
    state_changed_at = models.DateTimeField(default=timezone.now)
    invited_at = models.DateTimeField(null=True, blank=True)
    invited_email = models.EmailField(blank=True)
    grant = models.ForeignKey(
        "connections.Grant", null=True, blank=True, on_delete=models.SET_NULL, related_name="replaced_api_tokens"
    )
    parity_diff = models.JSONField(default=list, blank=True)
    parity_checked_at = models.DateTimeField(null=True, blank=True)
    override_reason = models.CharField(max_length=1000, blank=True)
    override_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    cut_over_at = models.DateTimeField(null=True, blank=True)
    standby_until = models.DateTimeField(null=True, blank=True)
    reminder_sent_at = models.DateTimeField(null=True, blank=True)
    removal_asked_at = models.DateTimeField(null=True, blank=True)
    removed_at = models.DateTimeField(null=True, blank=True)
    removal_how = models.CharField(max_length=32, blank=True)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "API token"
        ordering = ["client__name", "name"]
        constraints = [
            models.CheckConstraint(condition=Q(purpose__in=["customer", "internal"]), name="apitokens_purpose_valid"),
            models.CheckConstraint(
                condition=Q(
                    state__in=["token_only", "invited", "connected", "parity", "cut_over", "removing", "removed"]
                ),
                name="apitokens_state_valid",
            ),
            models.CheckConstraint(
                condition=Q(
                    status__in=["unverified", "active", "not_yet_valid", "expired", "disabled", "invalid", "erased"]
                ),
                name="apitokens_status_valid",
            ),
            # The same token twice would be two rows for one secret: imported once, per client.
            models.UniqueConstraint(fields=["token_fp"], condition=~Q(token_fp=""), name="apitokens_one_row_per_token"),
        ]
        indexes = [
            # The verification sweep: tokens still held, due now.
            models.Index(fields=["next_verify_at"], condition=~Q(status="erased"), name="apitokens_verify_due"),
            # The board: customer-delegated tokens per state.
            models.Index(fields=["purpose", "state"], name="apitokens_board"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint_short})"

    def set_token(self, value: str) -> None:
        self.token = value
        self.token_fp = crypto.fingerprint(value)

    @property
    def fingerprint_short(self) -> str:
        return f"sha256:{self.token_fp[:12]}" if self.token_fp else "erased"

    @property
    def is_held(self) -> bool:
        return self.status != self.Status.ERASED

    @property
    def can_delete_itself(self) -> bool:
        from .mapping import SELF_DELETE_GROUPS

        return bool(SELF_DELETE_GROUPS & set(self.permission_groups))

    @property
    def zone_names(self) -> list[str]:
        return [z.get("name", "") for z in self.reach_zones]

    @property
    def account_names(self) -> list[str]:
        return [a.get("name") or a.get("id", "") for a in self.reach_accounts]


class ApiTokenEvent(models.Model):
    """Append-only trail of a token: imported, verified, invited, connected, parity, override,
    cut over, rolled back, deleted at Cloudflare, verified gone, erased. Never a secret."""

    token = models.ForeignKey(ApiToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    client = models.ForeignKey("clients.Client", on_delete=models.CASCADE, related_name="api_token_events")
    kind = models.CharField(max_length=32)
    at = models.DateTimeField(default=timezone.now)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    message = models.CharField(max_length=1000, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["token", "-at"], name="apitokens_event_token_at")]

    def __str__(self) -> str:
        return f"{self.kind} at {self.at:%Y-%m-%d %H:%M}"


class TokenAlert(models.Model):
    """Outbox of staff notices about tokens, delivered by email and webhook like grant alerts."""

    class Kind(models.TextChoices):
        EXPIRED = "token_expired", "API token expired"
        INVALID = "token_invalid", "API token revoked or deleted"
        WINDOW_ENDING = "window_ending", "Rollback window ends soon"
        BOTH_ACTIVE = "both_active", "Token and grant both active beyond the window"

    class Delivery(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Not configured"

    token = models.ForeignKey(ApiToken, on_delete=models.CASCADE, related_name="alerts")
    client = models.ForeignKey("clients.Client", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    message = models.CharField(max_length=500)
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    email_status = models.CharField(max_length=16, choices=Delivery.choices, default=Delivery.PENDING)
    webhook_status = models.CharField(max_length=16, choices=Delivery.choices, default=Delivery.PENDING)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_delivery_error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One open notice per token and kind: a transition alerts once.
            models.UniqueConstraint(
                fields=["token", "kind"], condition=Q(resolved_at__isnull=True), name="apitokens_alert_one_open"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"


class ServiceKey(models.Model):
    """A key for the agency's own scripts: acts through the proxy on named clients and actions.

    The key is shown once; only its SHA-256 is stored (it is 256 random bits, so a fast hash is
    safe), found by its public prefix.
    """

    name = models.CharField(max_length=200, unique=True)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    clients = models.ManyToManyField("clients.Client", related_name="service_keys")
    actions = models.JSONField(default=list, help_text="Catalogue action ids this key may run.")
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and self.expires_at > now


class VerificationRun(models.Model):
    """One guided verification of an OAuth app, kept as a report (steps with evidence and times)."""

    class Outcome(models.TextChoices):
        RUNNING = "running", "Running"
        PASSED = "passed", "Passed"
        FAILED = "failed", "Failed"

    app = models.ForeignKey("connections.OAuthApp", on_delete=models.CASCADE, related_name="verification_runs")
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RUNNING)
    steps = models.JSONField(default=list, blank=True)  # [{"step", "ok", "evidence", "at"}]
    name_confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["app", "outcome", "-started_at"], name="apitokens_run_app")]

    def __str__(self) -> str:
        return f"Verification of {self.app_id} · {self.get_outcome_display()}"
