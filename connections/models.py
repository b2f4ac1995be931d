"""OAuth apps, consent attempts, grants, their audit trail and the alert outbox."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Count, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.db.models.signals import m2m_changed
from django.dispatch import receiver
from django.utils import timezone

from . import crypto
from .fields import EncryptedTextField

# Columns a grant list or page never needs: deferred so nothing is loaded or decrypted for them.
GRANT_SECRET_COLUMNS = ("access_token", "refresh_token", "app__client_secret")

# Statuses in which a grant is used by the agency (tokens kept fresh, checks run).
LIVE_STATUSES = ("active", "refresh_failing", "needs_reconsent")


class OAuthApp(models.Model):
    """One Cloudflare OAuth client registration of the agency."""

    class AuthMethod(models.TextChoices):
        BASIC = "client_secret_basic", "HTTP Basic (client_secret_basic)"
        POST = "client_secret_post", "Form body (client_secret_post)"

    class Visibility(models.TextChoices):
        PRIVATE = "private", "Private (members of the owning account only)"
        PUBLIC = "public", "Public (any Cloudflare user)"

    name = models.CharField(max_length=200, help_text="Shown to clients; match the name registered at Cloudflare.")
    client_id = models.CharField("OAuth client ID", max_length=200, unique=True)
    client_secret = EncryptedTextField(blank=True, help_text="Write-only: stored encrypted, never shown.")
    client_secret_fp = models.CharField(max_length=64, blank=True, editable=False)
    token_endpoint_auth_method = models.CharField(max_length=32, choices=AuthMethod.choices, default=AuthMethod.BASIC)
    redirect_uri = models.URLField(
        max_length=500,
        help_text="Exactly as registered at Cloudflare, e.g. https://portal.example/oauth/cloudflare/callback/",
    )
    required_scopes = models.JSONField(default=list, blank=True, help_text="Scope ids the agency needs.")
    optional_scopes = models.JSONField(default=list, blank=True, help_text="Scope ids a client may decline.")
    visibility = models.CharField(max_length=16, choices=Visibility.choices, default=Visibility.PUBLIC)
    publisher_domain = models.CharField(max_length=253, blank=True)

    class IssPolicy(models.TextChoices):
        ADVERTISED = "advertised", "Required when Cloudflare's discovery says it sends iss (RFC 9207)"
        ALWAYS = "always", "Always required"
        NEVER = "never", "Not required (checked when present)"

    # Whether Cloudflare sends `iss` on the callback is unknown: by default it is required exactly when
    # the server's discovery document advertises `authorization_response_iss_parameter_supported`.
    iss_policy = models.CharField(
        "iss on the callback", max_length=16, choices=IssPolicy.choices, default=IssPolicy.ADVERTISED
    )
    is_default = models.BooleanField(default=False, help_text="Used for new connections.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "OAuth app"
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="connections_oauthapp_one_default"
            ),
            models.CheckConstraint(
                condition=Q(token_endpoint_auth_method__in=["client_secret_basic", "client_secret_post"]),
                name="connections_oauthapp_auth_method_valid",
            ),
            models.CheckConstraint(
                condition=Q(visibility__in=["private", "public"]), name="connections_oauthapp_visibility_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def set_client_secret(self, secret: str) -> None:
        self.client_secret = secret
        self.client_secret_fp = crypto.fingerprint(secret)

    @property
    def all_scopes(self) -> list[str]:
        """Scopes requested on a full consent: offline_access first, then required, then optional."""
        scopes = ["offline_access", *self.required_scopes, *self.optional_scopes]
        return list(dict.fromkeys(scopes))


class AuthorizationRequest(models.Model):
    """One consent attempt: the server-side half of the OAuth `state` and PKCE verifier."""

    class Outcome(models.TextChoices):
        PENDING = "pending", "Pending"
        GRANTED = "granted", "Granted"
        CANCELLED = "cancelled", "Cancelled by the client"
        DENIED = "denied", "Refused (invalid scope or request)"
        ERROR = "error", "Failed"
        EXPIRED = "expired", "Expired"

    class Purpose(models.TextChoices):
        CONNECT = "connect", "Connect"
        RECONNECT = "reconnect", "Reconnect"
        ADD_SCOPES = "add_scopes", "Grant missing permissions"

    # Only the SHA-256 of `state` is stored: the value itself lives in the user's browser.
    state_hash = models.CharField(max_length=64, unique=True)
    code_verifier = EncryptedTextField()
    # SHA-256 of a random value kept in the portal user's session: binds the attempt to it.
    session_binding_hash = models.CharField(max_length=64)
    app = models.ForeignKey(OAuthApp, on_delete=models.PROTECT, related_name="authorization_requests")
    client = models.ForeignKey("clients.Client", on_delete=models.CASCADE, related_name="authorization_requests")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="authorization_requests"
    )
    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.CONNECT)
    replaces_grant = models.ForeignKey(
        "Grant", null=True, blank=True, on_delete=models.SET_NULL, related_name="reconsent_requests"
    )
    requested_scopes = models.JSONField(default=list)
    redirect_uri = models.URLField(max_length=500)
    expected_issuer = models.CharField(max_length=500)
    # Decided when the attempt starts (app policy + discovery), so the callback makes no extra call.
    iss_required = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    consumed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.PENDING)
    error_code = models.CharField(max_length=100, blank=True)
    error_description = models.CharField(max_length=500, blank=True)
    grant = models.ForeignKey(
        "Grant", null=True, blank=True, on_delete=models.SET_NULL, related_name="authorization_requests"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(outcome__in=["pending", "granted", "cancelled", "denied", "error", "expired"]),
                name="connections_authrequest_outcome_valid",
            ),
            models.CheckConstraint(
                condition=Q(purpose__in=["connect", "reconnect", "add_scopes"]),
                name="connections_authrequest_purpose_valid",
            ),
            # A finished attempt is consumed; a pending one is not.
            models.CheckConstraint(
                condition=Q(outcome="pending") | Q(consumed_at__isnull=False),
                name="connections_authrequest_finished_is_consumed",
            ),
        ]
        indexes = [
            # The clean-up sweep marks pending attempts past their expiry.
            models.Index(fields=["expires_at"], condition=Q(outcome="pending"), name="connections_authreq_pending"),
        ]

    def __str__(self) -> str:
        return f"Consent attempt #{self.pk} ({self.get_outcome_display()})"


class Grant(models.Model):
    """One authorization of an agency OAuth app by one Cloudflare user, for one client."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        REFRESH_FAILING = "refresh_failing", "Refresh failing"
        NEEDS_RECONSENT = "needs_reconsent", "Needs re-consent"
        DISCONNECTING = "disconnecting", "Revocation pending"
        DISCONNECTED = "disconnected", "Disconnected"
        REVOKED = "revoked", "Revoked at Cloudflare"
        LOST = "lost", "Lost (needs re-consent)"

    class Health(models.TextChoices):
        UNKNOWN = "unknown", "Not checked yet"
        HEALTHY = "healthy", "Healthy"
        DEGRADED = "degraded", "Degraded"
        FAILING = "failing", "Failing"

    class EndReason(models.TextChoices):
        NONE = "", "—"
        USER_REVOKED = "user_revoked", "Revoked by the Cloudflare user"
        APP_DELETED = "app_deleted", "OAuth app deleted or disabled at Cloudflare"
        DISCONNECTED_BY_CLIENT = "disconnected_by_client", "Disconnected by the client"
        DISCONNECTED_BY_STAFF = "disconnected_by_staff", "Disconnected by agency staff"
        REPLACED = "replaced", "Replaced by a newer consent"
        REFRESH_TOKEN_LOST = "refresh_token_lost", "Refresh token lost by the portal"
        NO_REFRESH_TOKEN = "no_refresh_token", "No refresh token (offline access not granted)"

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    client = models.ForeignKey("clients.Client", on_delete=models.PROTECT, related_name="grants")
    app = models.ForeignKey(OAuthApp, on_delete=models.PROTECT, related_name="grants")
    cf_user_id = models.CharField("Cloudflare user ID", max_length=64)
    cf_user_email = models.EmailField("Cloudflare user email", max_length=254, blank=True)
    requested_scopes = models.JSONField(default=list, blank=True)
    granted_scopes = models.JSONField(default=list, blank=True)
    declined_scopes = models.JSONField(default=list, blank=True)
    # True when granted_scopes lacks one of the app's required scopes. Kept by the database itself
    # (triggers on grant and OAuth app rows, migration 0007), whoever writes the scopes: the
    # admin's "missing a required scope" filter reads it from an index instead of testing every
    # grant's JSON. Python code uses `missing_required_scopes`, which is always current.
    scope_missing = models.BooleanField(default=False, editable=False)
    accounts = models.ManyToManyField("clients.CloudflareAccount", blank=True, related_name="grants")
    # len(accounts), kept in step with the relation (`_grant_accounts_changed` below): the admin
    # list shows and sorts by it without counting the relation for every row of the table.
    accounts_count = models.PositiveIntegerField(default=0, editable=False)
    all_accounts = models.BooleanField(default=False, help_text="Consent covered all of the user's accounts.")

    access_token = EncryptedTextField(blank=True)
    refresh_token = EncryptedTextField(blank=True)
    # SHA-256 fingerprints: shown masked in the admin, compared without decrypting.
    access_token_fp = models.CharField(max_length=64, blank=True, editable=False)
    refresh_token_fp = models.CharField(max_length=64, blank=True, editable=False)
    access_expires_at = models.DateTimeField(null=True, blank=True)

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACTIVE)
    end_reason = models.CharField(max_length=32, choices=EndReason.choices, default="", blank=True)
    status_changed_at = models.DateTimeField(default=timezone.now)
    authorized_at = models.DateTimeField(default=timezone.now)
    authorized_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="authorized_grants"
    )
    replaced_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replaced_grants"
    )
    ended_at = models.DateTimeField(null=True, blank=True)

    # Refresh engine: the database is the source of truth for due work.
    last_refreshed_at = models.DateTimeField(null=True, blank=True)
    next_refresh_at = models.DateTimeField(null=True, blank=True)
    # Compare-and-set claim: a worker owns the refresh until this time (longer than the worst HTTP time).
    refresh_lease_until = models.DateTimeField(null=True, blank=True)
    # Bumped on every stored rotation; a write only lands if the generation it read is still current.
    refresh_generation = models.PositiveIntegerField(default=0)
    # Set when a refresh call's outcome is unknown (timeout after sending): the next attempt decides.
    refresh_uncertain_since = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    # When the current streak of refresh failures began (counts grants failing together: incidents).
    refresh_failing_since = models.DateTimeField(null=True, blank=True)
    # Refresh history, kept on the row so routine refreshes write no event: totals and the last
    # REFRESH_HISTORY_LENGTH attempts ({"at", "outcome"}, newest first), shown on the grant page.
    refresh_count = models.PositiveIntegerField(default=0)
    refresh_failure_count = models.PositiveIntegerField(default=0)
    refresh_history = models.JSONField(default=list, blank=True)
    last_error = models.CharField(max_length=500, blank=True)

    # Health checks.
    health = models.CharField(max_length=16, choices=Health.choices, default=Health.UNKNOWN)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    next_check_at = models.DateTimeField(null=True, blank=True)
    # Revocation at Cloudflare after a disconnect: retried with backoff until confirmed.
    next_revoke_at = models.DateTimeField(null=True, blank=True)
    revoke_attempts = models.PositiveIntegerField(default=0)

    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-authorized_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    status__in=[
                        "active",
                        "refresh_failing",
                        "needs_reconsent",
                        "disconnecting",
                        "disconnected",
                        "revoked",
                        "lost",
                    ]
                ),
                name="connections_grant_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(health__in=["unknown", "healthy", "degraded", "failing"]),
                name="connections_grant_health_valid",
            ),
            # An ended grant says when it ended, and keeps no usable token.
            models.CheckConstraint(
                condition=~Q(status__in=["disconnected", "revoked", "lost"])
                | (Q(ended_at__isnull=False) & Q(access_token_fp="") & Q(refresh_token_fp="")),
                name="connections_grant_ended_has_no_tokens",
            ),
            # One live grant per (client, app, Cloudflare user): a second consent replaces the first.
            models.UniqueConstraint(
                fields=["client", "app", "cf_user_id"],
                condition=Q(status__in=LIVE_STATUSES),
                name="connections_grant_one_live_per_cf_user",
            ),
        ]
        indexes = [
            # Refresh sweep: live grants whose refresh is due (WHERE next_refresh_at <= now).
            models.Index(
                fields=["next_refresh_at"],
                condition=Q(status__in=["active", "refresh_failing"]),
                name="connections_grant_refresh_due",
            ),
            # Health sweep: live grants whose next check is due.
            models.Index(
                fields=["next_check_at"], condition=Q(status__in=LIVE_STATUSES), name="connections_grant_check_due"
            ),
            # Revocation retry sweep for disconnects Cloudflare has not confirmed yet.
            models.Index(
                fields=["next_revoke_at"], condition=Q(status="disconnecting"), name="connections_grant_revoke_due"
            ),
            # Portal and admin: a client's grants by status.
            models.Index(fields=["client", "status"], name="connections_grant_client_st"),
            # The admin's grant list, newest first (ORDER BY authorized_at DESC LIMIT 100).
            models.Index(fields=["-authorized_at"], name="connections_grant_authorized"),
            # The admin list filtered by status (newest first, and its count) and by health.
            models.Index(fields=["status", "-authorized_at"], name="connections_grant_status_auth"),
            models.Index(fields=["health", "status"], name="connections_grant_health_st"),
            # The admin list sorted by accounts reached or by email (either direction).
            models.Index(fields=["accounts_count", "id"], name="connections_grant_accounts_n"),
            models.Index(fields=["cf_user_email", "id"], name="connections_grant_email"),
            # The admin's scope-coverage filters: missing a required scope; an optional one declined.
            models.Index(fields=["-authorized_at"], condition=Q(scope_missing=True), name="connections_grant_missing"),
            models.Index(fields=["-authorized_at"], condition=~Q(declined_scopes=[]), name="connections_grant_partial"),
            # The clients list's "partial" connection: a client's active grants that declined a scope.
            models.Index(
                fields=["client"],
                condition=Q(status="active") & ~Q(declined_scopes=[]),
                name="connections_grant_declined",
            ),
        ]

    def __str__(self) -> str:
        who = self.cf_user_email or self.cf_user_id
        return f"{who} → {self.client.name} ({self.get_status_display()})"

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_STATUSES

    @property
    def missing_required_scopes(self) -> list[str]:
        granted = set(self.granted_scopes)
        return [s for s in self.app.required_scopes if s not in granted]

    @property
    def scope_coverage(self) -> str:
        """complete / partial (an optional scope declined) / missing (a required scope absent)."""
        if self.missing_required_scopes:
            return "missing"
        return "partial" if self.declined_scopes else "complete"

    COVERAGE_LABELS = {"complete": "Complete", "partial": "Partial", "missing": "Missing required"}

    def get_scope_coverage_display(self) -> str:
        return self.COVERAGE_LABELS[self.scope_coverage]

    def set_tokens(self, *, access_token: str, refresh_token: str) -> None:
        self.access_token = access_token
        self.refresh_token = refresh_token
        self.access_token_fp = crypto.fingerprint(access_token)
        self.refresh_token_fp = crypto.fingerprint(refresh_token)

    def clear_tokens(self) -> None:
        self.set_tokens(access_token="", refresh_token="")

    @property
    def access_token_masked(self) -> str:
        return crypto.mask("cfoat_", self.access_token_fp)

    @property
    def refresh_token_masked(self) -> str:
        return crypto.mask("cfort_", self.refresh_token_fp)


def grant_accounts_recount(*, grant_ids) -> None:
    """Set Grant.accounts_count from the relation, in one UPDATE."""
    reached = (
        Grant.accounts.through.objects.filter(grant_id=OuterRef("pk"))
        .values("grant_id")
        .annotate(n=Count("*"))
        .values("n")
    )
    Grant.objects.filter(pk__in=list(grant_ids)).update(accounts_count=Coalesce(Subquery(reached), 0))


@receiver(m2m_changed, sender=Grant.accounts.through)
def _grant_accounts_changed(sender, instance, action, reverse, pk_set, **kwargs) -> None:
    # Every change of the relation through its managers (grant.accounts.set/add/remove/clear,
    # account.grants...) recounts the grants concerned. A reverse clear does not say which grants
    # it touched: they are noted before it.
    if reverse and action == "pre_clear":
        instance._grants_before_clear = list(instance.grants.values_list("pk", flat=True))
        return
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    if not reverse:
        grant_ids = [instance.pk]
    elif action == "post_clear":
        grant_ids = getattr(instance, "_grants_before_clear", [])
    else:
        grant_ids = pk_set or []
    if grant_ids:
        grant_accounts_recount(grant_ids=grant_ids)


class GrantEvent(models.Model):
    """Append-only audit trail. Support reads *what happened* from `kind` alone; never a secret in `detail`."""

    class Kind(models.TextChoices):
        # Consent.
        CONSENT_STARTED = "consent_started", "Consent started"
        RECONSENT_REQUESTED = "reconsent_requested", "Re-consent link sent to the client"
        CONNECTED = "connected", "Connected"
        RECONNECTED = "reconnected", "Reconnected (replaced an earlier grant)"
        SCOPES_ADDED = "scopes_added", "Missing permissions granted"
        CONSENT_CANCELLED = "consent_cancelled", "Consent cancelled by the client"
        SCOPE_DECLINED = "scope_declined", "Optional permission declined"
        SCOPE_MISSING = "scope_missing", "Required permission missing"
        INVALID_SCOPE = "invalid_scope", "Cloudflare refused the requested scopes"
        CALLBACK_REJECTED = "callback_rejected", "Callback rejected (bad or replayed state)"
        UPSTREAM_FAILURE = "upstream_failure", "Cloudflare unavailable"
        PRODUCT_FAILURE = "product_failure", "Portal error"
        # Refresh.
        REFRESHED = "refreshed", "Token refreshed"
        REFRESH_FAILED = "refresh_failed", "Refresh failed (will retry)"
        REFRESH_FAILING = "refresh_failing", "Refresh failing repeatedly"
        REFRESH_UNCERTAIN = "refresh_uncertain", "Refresh outcome unknown"
        RECOVERED = "recovered", "Recovered"
        REVOKED = "revoked", "Revoked at Cloudflare"
        LOST = "lost", "Lost (needs re-consent)"
        CLIENT_CONFIG_ERROR = "client_config_error", "OAuth app credentials rejected"
        # Health checks.
        CHECK_FAILED = "check_failed", "Health check failed"
        ACCOUNTS_CHANGED = "accounts_changed", "Accounts reached changed"
        ZONES_CHANGED = "zones_changed", "Zones changed"
        SCOPES_CHANGED = "scopes_changed", "Granted scopes changed"
        OAUTH_ACCESS_DISABLED = "oauth_access_disabled", "OAuth app access switched off for an account"
        # Disconnect.
        DISCONNECT_REQUESTED = "disconnect_requested", "Disconnect requested"
        REVOCATION_RETRY = "revocation_retry", "Revocation at Cloudflare pending (will retry)"
        DISCONNECTED = "disconnected", "Disconnected (revocation confirmed)"

    class Actor(models.TextChoices):
        STAFF = "staff", "Agency staff"
        CLIENT = "client", "Client contact"
        SYSTEM = "system", "Portal"
        CLOUDFLARE = "cloudflare", "Cloudflare"

    # What support filters by: the five questions of the support log, plus lifecycle noise.
    CATEGORY_BY_KIND = {
        "consent_cancelled": "cancellation",
        "scope_declined": "missing_scope",
        "scope_missing": "missing_scope",
        "invalid_scope": "missing_scope",
        "revoked": "revoked",
        "lost": "revoked",
        "upstream_failure": "upstream",
        "refresh_failed": "upstream",
        "refresh_failing": "upstream",
        "check_failed": "upstream",
        "refresh_uncertain": "upstream",
        "product_failure": "product",
        "callback_rejected": "product",
        "client_config_error": "product",
    }

    grant = models.ForeignKey(Grant, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    client = models.ForeignKey("clients.Client", on_delete=models.CASCADE, related_name="grant_events")
    authorization_request = models.ForeignKey(
        AuthorizationRequest, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    kind = models.CharField(max_length=32, choices=Kind.choices)
    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_type = models.CharField(max_length=16, choices=Actor.choices, default=Actor.SYSTEM)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    message = models.CharField(max_length=500, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(actor_type__in=["staff", "client", "system", "cloudflare"]),
                name="connections_event_actor_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["grant", "-at"], name="connections_event_grant_at"),
            models.Index(fields=["client", "-at"], name="connections_event_client_at"),
            models.Index(fields=["kind", "-at"], name="connections_event_kind_at"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} at {self.at:%Y-%m-%d %H:%M}"

    @property
    def category(self) -> str:
        return self.CATEGORY_BY_KIND.get(self.kind, "lifecycle")


class Alert(models.Model):
    """Outbox row for staff notifications, written in the same transaction as the state change."""

    class Kind(models.TextChoices):
        REVOKED = "revoked", "Grant revoked"
        LOST = "lost", "Grant lost (needs re-consent)"
        REFRESH_FAILING = "refresh_failing", "Refresh failing"
        SCOPE_MISSING = "scope_missing", "Required scope missing"
        HEALTH_FAILING = "health_failing", "Health check failing"
        RECOVERED = "recovered", "Recovered"
        DISCONNECTED = "disconnected", "Disconnected"
        CLIENT_CONFIG = "client_config", "OAuth app configuration"
        INCIDENT = "incident", "Incident (many grants failing)"

    class Delivery(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Not configured"

    # Notices that report an event rather than an ongoing problem: they are closed on creation,
    # so they never block the next notice of the same kind.
    NOTICE_KINDS = ("recovered", "disconnected")

    kind = models.CharField(max_length=32, choices=Kind.choices)
    grant = models.ForeignKey(Grant, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts")
    app = models.ForeignKey(OAuthApp, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts")
    client = models.ForeignKey("clients.Client", null=True, blank=True, on_delete=models.CASCADE, related_name="alerts")
    message = models.CharField(max_length=500)
    created_at = models.DateTimeField(default=timezone.now)
    # Open while the problem lasts; set when the grant recovers (or at once for notices).
    resolved_at = models.DateTimeField(null=True, blank=True)
    email_status = models.CharField(max_length=16, choices=Delivery.choices, default=Delivery.PENDING)
    webhook_status = models.CharField(max_length=16, choices=Delivery.choices, default=Delivery.PENDING)
    delivery_attempts = models.PositiveIntegerField(default=0)
    next_delivery_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_delivery_error = models.CharField(max_length=500, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    kind__in=[
                        "revoked",
                        "lost",
                        "refresh_failing",
                        "scope_missing",
                        "health_failing",
                        "recovered",
                        "disconnected",
                        "client_config",
                        "incident",
                    ]
                ),
                name="connections_alert_kind_valid",
            ),
            models.CheckConstraint(
                condition=Q(grant__isnull=False) | Q(app__isnull=False), name="connections_alert_has_subject"
            ),
            # Exactly one open alert per grant and kind: a transition alerts once, however often
            # the same failure is seen.
            models.UniqueConstraint(
                fields=["grant", "kind"],
                condition=Q(resolved_at__isnull=True, grant__isnull=False),
                name="connections_alert_one_open_per_grant_kind",
            ),
            # App-wide alerts (rejected client credentials): one open per app and kind.
            models.UniqueConstraint(
                fields=["app", "kind"],
                condition=Q(resolved_at__isnull=True, grant__isnull=True),
                name="connections_alert_one_open_per_app_kind",
            ),
        ]
        indexes = [
            # Drained by the alert delivery sweep.
            models.Index(
                fields=["next_delivery_at"],
                condition=Q(delivered_at__isnull=True),
                name="connections_alert_undelivered",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"
