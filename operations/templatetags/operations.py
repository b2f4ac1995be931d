"""Sections other apps' pages include with one line: `{% load operations %}{% grant_operations grant %}`."""

from __future__ import annotations

from django import template
from django.urls import reverse

from clients.models import Zone

from .. import selectors
from ..gate import grant_is_usable

register = template.Library()


@register.inclusion_tag("operations/_grant_section.html", takes_context=True)
def grant_operations(context, grant):
    """Grant page: what its scopes allow and refuse, and its recent actions (one query)."""
    return {
        "grant": grant,
        "usable": grant_is_usable(grant),
        "lines": selectors.action_lines(grant.granted_scopes),
        "records": selectors.records_recent(grant_id=grant.pk),
        "reconsent_url": reverse("admin:operations_reconsent", args=[grant.pk]),
        "request": context.get("request"),
        "csrf_token": context.get("csrf_token"),
    }


@register.inclusion_tag("operations/_client_section.html", takes_context=True)
def client_operations(context, client):
    """Client page: the zones staff can work on, and the client's recent actions (two queries)."""
    zones = list(
        Zone.objects.filter(account__client=client, removed_at__isnull=True)
        .select_related("account")
        .order_by("name")[:50]
    )
    return {"client": client, "zones": zones, "records": selectors.records_recent(client_id=client.pk)}


@register.inclusion_tag("operations/_portal_section.html")
def portal_operations(client, cards):
    """Portal home: per connection what it allows and not; what the agency changed (one query)."""
    connections = []
    for card in cards:
        lines = selectors.action_lines(card.grant.granted_scopes)
        connections.append((card.grant, lines, any(not line.allowed for line in lines)))
    return {
        "connections": connections,
        "changes": selectors.portal_changes(client_id=client.pk),
    }


@register.inclusion_tag("operations/_consent_section.html")
def consent_operations(required, optional):
    """Pre-consent page: what the agency will be able to do, and what only if the optional scopes stay."""
    required_ids = [line.id for line in required]
    everything = required_ids + [line.id for line in optional]
    with_required = {line.action.id for line in selectors.action_lines(required_ids) if line.allowed}
    lines = selectors.action_lines(everything)
    return {
        "always": [line for line in lines if line.allowed and line.action.id in with_required],
        "if_optional": [line for line in lines if line.allowed and line.action.id not in with_required],
        "never": [line for line in lines if not line.allowed],
    }


@register.inclusion_tag("operations/_scope_audit.html")
def app_scope_audit(app):
    """OAuth app page: scopes requested vs. used by some action; unused ones flagged (no query)."""
    return {"audit": selectors.scope_audit(app=app)}
