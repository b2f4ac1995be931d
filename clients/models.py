"""The agency's clients, their portal users, and the Cloudflare accounts and zones they own."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


def _language_choices():
    return [(code, name) for code, name in settings.LANGUAGES]


class Client(models.Model):
    """A customer of the agency whose Cloudflare accounts the agency manages."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    notes = models.TextField(blank=True)
    account_manager = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="managed_clients",
        limit_choices_to={"is_staff": True},
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # The portal's language for this client's contacts who have not chosen one; empty: the browser's.
    default_language = models.CharField(
        max_length=16,
        blank=True,
        choices=_language_choices,
        help_text="Language of the client portal and emails for contacts who have not chosen one "
        "(empty: their browser's language).",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ClientMember(models.Model):
    """A client contact who logs in to /portal/: a non-staff user belonging to exactly one client."""

    class Role(models.TextChoices):
        OWNER = "owner", _("Owner (can connect and disconnect)")
        VIEWER = "viewer", _("Viewer (read only)")

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="members")
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="client_membership")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.OWNER)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    invited_at = models.DateTimeField(default=timezone.now)
    joined_at = models.DateTimeField(null=True, blank=True)
    # The contact's own choices on /portal/settings/; empty: the client's default, then the browser's
    # language; the portal's time zone (settings.TIME_ZONE).
    language = models.CharField(_("language"), max_length=16, blank=True, choices=_language_choices)
    time_zone = models.CharField(_("time zone"), max_length=64, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(role__in=["owner", "viewer"]), name="clients_member_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user.get_username()} · {self.client.name}"

    @property
    def can_manage_connections(self) -> bool:
        return self.role == self.Role.OWNER


class CloudflareAccount(models.Model):
    """A Cloudflare account a client owns, as first seen through one of their grants."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="cloudflare_accounts")
    cf_account_id = models.CharField("Cloudflare account ID", max_length=64)
    name = models.CharField(max_length=255)
    # None: unknown; False: an account admin switched off OAuth app access for this account.
    oauth_access_enabled = models.BooleanField(null=True, blank=True)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    # Set when no live grant reaches the account any more; the row stays for the audit trail.
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["client", "cf_account_id"], name="clients_account_unique_per_client"),
        ]

    def __str__(self) -> str:
        return self.name


class Zone(models.Model):
    """A zone (domain) in a client's Cloudflare account. Removed zones are marked, never deleted."""

    account = models.ForeignKey(CloudflareAccount, on_delete=models.CASCADE, related_name="zones")
    cf_zone_id = models.CharField("Cloudflare zone ID", max_length=64)
    name = models.CharField(max_length=255)
    status = models.CharField(max_length=32, blank=True)
    plan_name = models.CharField(max_length=100, blank=True)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["account", "cf_zone_id"], name="clients_zone_unique_per_account"),
        ]
        indexes = [
            # Zone search by name in the admin and the portal.
            models.Index(fields=["name"], name="clients_zone_name"),
        ]

    def __str__(self) -> str:
        return self.name
