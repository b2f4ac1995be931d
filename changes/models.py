"""Bulk changes: one action with its inputs, over many zones (across clients and grants).

A `Change` is what staff asked for; each zone it covers is one `ChangeItem` with its own outcome.
The lifecycle:

    previewing ──(every item's dry run done)──▶ previewed ──(staff confirm)──▶ running ──▶ finished
         └───────────────────────── cancelled ◀──────────────┘

An item's status:

    pending ─dry run─▶ ready | unchanged | refused | invalid
    ready ─confirm─▶ queued ─claim─▶ running ─▶ done | unchanged | blocked | failed
    blocked ─resume─▶ queued

Only `ready` items run. `blocked` means "stopped for a reason that may pass" (the connection was
revoked, lost a permission, Cloudflare was unavailable): Resume queues those again, and only those.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Change(models.Model):
    class Status(models.TextChoices):
        PREVIEWING = "previewing", "Dry run in progress"
        PREVIEWED = "previewed", "Dry run ready: waiting for confirmation"
        RUNNING = "running", "Running"
        FINISHED = "finished", "Finished"
        CANCELLED = "cancelled", "Cancelled"

    plan = models.CharField(max_length=64)
    inputs = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PREVIEWING)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    confirmed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "bulk change"
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["previewing", "previewed", "running", "finished", "cancelled"]),
                name="changes_change_status_valid",
            ),
        ]

    def __str__(self) -> str:
        from .plans import plan_get

        return f"#{self.pk} {plan_get(self.plan).summary(self.inputs)}"


class ChangeItem(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Dry run pending"
        READY = "ready", "Will change"
        UNCHANGED = "unchanged", "Nothing to change"
        REFUSED = "refused", "Refused (will not run)"
        INVALID = "invalid", "Invalid for this zone (will not run)"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        BLOCKED = "blocked", "Blocked"
        FAILED = "failed", "Failed"

    change = models.ForeignKey(Change, on_delete=models.CASCADE, related_name="items")
    client = models.ForeignKey("clients.Client", on_delete=models.CASCADE, related_name="+")
    zone = models.ForeignKey("clients.Zone", on_delete=models.CASCADE, related_name="+")
    zone_name = models.CharField(max_length=255)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    reason = models.CharField(max_length=1000, blank=True)
    # The grant that ran it (the last attempt), for "blocked" cascades and the page.
    grant = models.ForeignKey("connections.Grant", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The dry run: a note and before → after (records), from read-only calls.
    preview = models.JSONField(default=dict, blank=True)
    # What was done: Cloudflare's record ids, existed / unchanged, before → after.
    result = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # A claimed item is leased: a worker killed mid-item leaves it `running` with an expired lease,
    # and the sweep queues it again; the next run looks before writing (never a blind retry).
    lease_until = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["zone_name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["change", "zone"], name="changes_item_one_per_zone"),
            models.CheckConstraint(
                condition=Q(
                    status__in=[
                        "pending",
                        "ready",
                        "unchanged",
                        "refused",
                        "invalid",
                        "queued",
                        "running",
                        "done",
                        "blocked",
                        "failed",
                    ]
                ),
                name="changes_item_status_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["change", "status"], name="changes_item_change_status"),
            # The sweep: items waiting or running, across changes.
            models.Index(
                fields=["status", "dispatched_at"],
                condition=Q(status__in=["pending", "queued", "running"]),
                name="changes_item_open",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.zone_name} · {self.get_status_display()}"
