"""The record of what the agency did with a client's access.

How reads are kept, and why: every write (and every read that did not succeed) is one
`ActionRecord` row, because each is something staff or the client may need to look up. A
successful read is only counted, in `ActionReadCount` (one row per day, grant, action and staff
member), because a staff member paging through DNS records would otherwise write a row per page:
reads outnumber writes by orders of magnitude and say nothing the count does not.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class ActionRecord(models.Model):
    """One action run: who, on what, with which inputs, and what Cloudflare answered. Append-only."""

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded", "Succeeded"
        REFUSED = "refused", "Refused (nothing sent to Cloudflare)"
        INVALID = "invalid", "Invalid input (nothing sent to Cloudflare)"
        FAILED = "failed", "Cloudflare said no"
        UNAVAILABLE = "unavailable", "Cloudflare unavailable (nothing applied)"
        UNCERTAIN = "uncertain", "No answer (may or may not have been applied)"
        AUTH_ERROR = "auth_error", "Authentication error at Cloudflare"

    class Credential(models.TextChoices):
        GRANT = "grant", "OAuth grant"
        API_TOKEN = "api_token", "API token (before cutover)"

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_via = models.CharField(max_length=16, default="staff")
    actor_label = models.CharField(max_length=200, blank=True)
    client = models.ForeignKey("clients.Client", on_delete=models.CASCADE, related_name="action_records")
    # Which credential ran the action: the grant, or the client's API token before cutover. The
    # token is named by id and label, with no foreign key: operations does not depend on the
    # migration app, and the record outlives the token (erased after the switch).
    credential = models.CharField(max_length=16, choices=Credential.choices, default=Credential.GRANT)
    api_token_id = models.BigIntegerField(null=True, blank=True)
    credential_label = models.CharField(max_length=200, blank=True)
    grant = models.ForeignKey(
        "connections.Grant", null=True, blank=True, on_delete=models.SET_NULL, related_name="action_records"
    )
    cf_user_id = models.CharField("Cloudflare user ID", max_length=64, blank=True)
    zone = models.ForeignKey("clients.Zone", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Kept as text too: the zone row may be gone or renamed, the record must still read right.
    zone_name = models.CharField(max_length=255, blank=True)
    account = models.ForeignKey(
        "clients.CloudflareAccount", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action_id = models.CharField(max_length=64)
    kind = models.CharField(max_length=16)
    inputs = models.JSONField(default=dict, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    # Why it did not succeed, in plain words (the gate's reasons, input errors, Cloudflare's words).
    reason = models.CharField(max_length=1000, blank=True)
    error_codes = models.JSONField(default=list, blank=True)
    error_messages = models.JSONField(default=list, blank=True)
    result = models.JSONField(default=dict, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    # A bulk change item (changes app); no foreign key so operations does not depend on changes.
    change_item_id = models.BigIntegerField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    outcome__in=["succeeded", "refused", "invalid", "failed", "unavailable", "uncertain", "auth_error"]
                ),
                name="operations_record_outcome_valid",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=["read", "write", "destructive"]), name="operations_record_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(credential__in=["grant", "api_token"]), name="operations_record_credential_valid"
            ),
        ]
        indexes = [
            # Client page and portal: a client's records, newest first.
            models.Index(fields=["client", "-created_at"], name="operations_record_client_at"),
            # Grant page: a grant's recent records.
            models.Index(fields=["grant", "-created_at"], name="operations_record_grant_at"),
            # The changelist, newest first.
            models.Index(fields=["-created_at"], name="operations_record_at"),
            # Bulk changes look up the records of an item.
            models.Index(
                fields=["change_item_id"], condition=Q(change_item_id__isnull=False), name="operations_record_item"
            ),
            # A retried call with the same key returns the earlier success.
            models.Index(fields=["idempotency_key"], condition=~Q(idempotency_key=""), name="operations_record_idem"),
        ]

    def __str__(self) -> str:
        return f"{self.action_id} · {self.get_outcome_display()}"

    @property
    def succeeded(self) -> bool:
        return self.outcome == self.Outcome.SUCCEEDED

    @property
    def client_sentence(self) -> str:
        from .catalogue import CATALOGUE

        action = CATALOGUE.get(self.action_id)
        if action is None:
            return self.action_id
        return action.sentence(inputs=self.inputs, result=self.result, zone_name=self.zone_name)


class ActionReadCount(models.Model):
    """Successful reads, counted per day, grant, action and staff member (see the module docstring)."""

    day = models.DateField()
    client = models.ForeignKey("clients.Client", on_delete=models.CASCADE, related_name="+")
    grant = models.ForeignKey("connections.Grant", on_delete=models.CASCADE, related_name="+")
    action_id = models.CharField(max_length=64)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_via = models.CharField(max_length=16, default="staff")
    count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-day"]
        constraints = [
            models.UniqueConstraint(
                fields=["day", "grant", "action_id", "actor", "actor_via"],
                name="operations_readcount_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action_id} × {self.count} on {self.day}"
