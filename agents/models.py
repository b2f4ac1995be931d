"""An agent connection: what one staff member approved for one MCP client (agent).

The OAuth side (the client registration, codes, access and refresh tokens) lives in
django-oauth-toolkit's tables; this model holds what OAuth scopes cannot say: which tools of the
catalogue the agent may call and on which clients. Every tool call checks it again (agents.tools),
so narrowing or revoking a connection takes effect at the next call.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models, transaction
from django.db.models import F, Q
from django.utils import timezone
from oauth2_provider.settings import oauth2_settings


class AgentConnectionQuerySet(models.QuerySet):
    def active(self):
        return self.filter(revoked_at__isnull=True)


class AgentConnection(models.Model):
    class RevokeReason(models.TextChoices):
        STAFF = "staff", "Revoked by staff"
        REFRESH_REUSE = "refresh_reuse", "A refresh token was used twice (possible theft)"
        REPLACED = "replaced", "Replaced by a newer approval"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent_connections", verbose_name="approved by"
    )
    application = models.ForeignKey(
        oauth2_settings.APPLICATION_MODEL, on_delete=models.CASCADE, related_name="agent_connections"
    )
    # The agent's name and where it comes from, as shown at consent (the registration may change).
    name = models.CharField(max_length=255)
    client_id_url = models.CharField("metadata document / client ID", max_length=255)
    redirect_uri = models.CharField(max_length=500)
    tools = models.JSONField(default=list, help_text="Names of the MCP tools approved.")
    clients = models.ManyToManyField("clients.Client", related_name="agent_connections")
    approved_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    calls = models.PositiveIntegerField(default=0)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoke_reason = models.CharField(max_length=32, choices=RevokeReason.choices, blank=True)

    objects = AgentConnectionQuerySet.as_manager()

    class Meta:
        ordering = ["-approved_at", "-id"]
        constraints = [
            # One live approval per agent and staff member: a new consent replaces the old one.
            models.UniqueConstraint(
                fields=["application", "user"],
                condition=Q(revoked_at__isnull=True),
                name="agents_connection_one_active",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} (approved by {self.user})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def record_call(self) -> None:
        AgentConnection.objects.filter(pk=self.pk).update(calls=F("calls") + 1, last_used_at=timezone.now())

    def revoke(self, *, reason: str, by=None) -> None:
        """Mark revoked and revoke every OAuth token of this agent for this staff member."""
        with transaction.atomic():
            updated = AgentConnection.objects.filter(pk=self.pk, revoked_at__isnull=True).update(
                revoked_at=timezone.now(), revoked_by=by, revoke_reason=reason
            )
            revoke_tokens(application_id=self.application_id, user_id=self.user_id)
        if updated:
            self.refresh_from_db(fields=["revoked_at", "revoked_by", "revoke_reason"])


def revoke_tokens(*, application_id: int, user_id: int) -> None:
    """Every access token, refresh token and pending code of an agent for a staff member."""
    from oauth2_provider.models import get_access_token_model, get_grant_model, get_refresh_token_model

    now = timezone.now()
    get_refresh_token_model().objects.filter(
        application_id=application_id, user_id=user_id, revoked__isnull=True
    ).update(revoked=now)
    get_access_token_model().objects.filter(application_id=application_id, user_id=user_id).delete()
    get_grant_model().objects.filter(application_id=application_id, user_id=user_id).delete()
