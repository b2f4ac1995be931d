"""Reads for the pages that show actions: each with its joins, a fixed number of queries."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet

from connections import scopes as scope_words
from connections.models import OAuthApp

from .catalogue import KIND_LABELS, Action, actions_for_scopes, scopes_used, unused_scopes
from .models import ActionRecord

RECENT = 10


def records_recent(
    *, client_id: int | None = None, grant_id: int | None = None, limit: int = RECENT
) -> list[ActionRecord]:
    """The newest action records of a client or a grant (one query)."""
    queryset: QuerySet[ActionRecord] = ActionRecord.objects.select_related("actor")
    if client_id is not None:
        queryset = queryset.filter(client_id=client_id)
    if grant_id is not None:
        queryset = queryset.filter(grant_id=grant_id)
    return list(queryset.order_by("-created_at", "-id")[:limit])


def portal_changes(*, client_id: int, limit: int = 20) -> list[ActionRecord]:
    """What the agency changed in the client's account: succeeded writes, newest first (one query).

    Only the columns the sentence needs: staff names and inputs beyond the sentence stay in the admin.
    """
    return list(
        ActionRecord.objects.filter(client_id=client_id, outcome=ActionRecord.Outcome.SUCCEEDED)
        .exclude(kind="read")
        .only("id", "action_id", "inputs", "result", "zone_name", "created_at", "actor_via")
        .order_by("-created_at", "-id")[:limit]
    )


@dataclass(frozen=True)
class ActionLine:
    action: Action
    allowed: bool
    missing: list[str]  # plain words of the scopes it misses

    @property
    def kind_label(self) -> str:
        return KIND_LABELS[self.action.kind]


def action_lines(scopes) -> list[ActionLine]:
    """Every catalogue action, allowed or not with these scopes, and why not (no query)."""
    allowed, refused = actions_for_scopes(scopes)
    lines = [ActionLine(a, True, []) for a in allowed]
    lines += [ActionLine(a, False, [scope_words.describe(s) for s in sorted(m)]) for a, m in refused]
    return lines


@dataclass(frozen=True)
class ScopeAudit:
    requested: list[str]
    used: list[str]
    unused: list[str]  # requested but used by no action: flagged
    needed_not_requested: list[str]  # some action needs it, the app does not ask for it


def scope_audit(*, app: OAuthApp) -> ScopeAudit:
    requested = [s for s in app.all_scopes]
    unused = unused_scopes(requested)
    used_all = scopes_used()
    return ScopeAudit(
        requested=requested,
        used=[s for s in requested if s in used_all],
        unused=unused,
        needed_not_requested=sorted(used_all - set(requested)),
    )
