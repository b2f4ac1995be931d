"""Migration tiles on the admin dashboard, and an app's verification on its admin page."""

from __future__ import annotations

from django import template
from django.urls import reverse

from connections.models import OAuthApp

from ..models import VerificationRun
from ..selectors import dashboard_tile

register = template.Library()


def _unverified_apps() -> int:
    """Active apps whose latest finished run did not pass (or that never had one): two queries."""
    passed = set()
    latest: dict[int, str] = {}
    for app_id, outcome in (
        VerificationRun.objects.exclude(outcome=VerificationRun.Outcome.RUNNING)
        .order_by("app_id", "-started_at")
        .values_list("app_id", "outcome")
    ):
        latest.setdefault(app_id, outcome)
    passed = {a for a, o in latest.items() if o == VerificationRun.Outcome.PASSED}
    return OAuthApp.objects.filter(is_active=True).exclude(pk__in=passed).count()


@register.inclusion_tag("admin/apitokens/_dashboard_tiles.html", takes_context=True)
def migration_tiles(context):
    """Scoped like the rest of the dashboard: an account manager counts their own clients."""
    from agencyportal.roles import staff_sees_all_clients

    from ..models import ApiToken, TokenAlert

    request = context["request"]
    tokens, alerts = ApiToken.objects.all(), TokenAlert.objects.all()
    if not staff_sees_all_clients(request):
        tokens = tokens.filter(client__account_manager=request.user)
        alerts = alerts.filter(client__account_manager=request.user)
    counts = dashboard_tile(tokens=tokens, alerts=alerts)
    board = reverse("admin:apitokens_board")
    tiles = [
        {"label": "Clients still on API tokens", "value": counts["on_tokens"], "tone": "info", "url": board},
        {
            "label": "Token and grant both active beyond the rollback window",
            "value": counts["overdue"],
            "tone": "bad",
            "url": board + "?state=removing",
        },
        {
            "label": "Open API token alerts",
            "value": counts["open_alerts"],
            "tone": "warn",
            "url": reverse("admin:apitokens_tokenalert_changelist") + "?resolved_at__isnull=True",
        },
        {
            "label": "OAuth apps not verified",
            "value": _unverified_apps(),
            "tone": "warn",
            "url": reverse("admin:apitokens_verificationrun_changelist"),
        },
    ]
    return {"tiles": tiles}


@register.inclusion_tag("admin/apitokens/_app_verification.html")
def app_verification(app: OAuthApp):
    last = app.verification_runs.exclude(outcome=VerificationRun.Outcome.RUNNING).order_by("-started_at").first()
    return {"app": app, "last": last, "verified": last is not None and last.outcome == VerificationRun.Outcome.PASSED}


@register.inclusion_tag("apitokens/_portal_notice.html")
def portal_migration_notice(client):
    """On the portal home: the client's migrations in progress (one query)."""
    from ..models import ApiToken

    tokens = list(
        ApiToken.objects.filter(client_id=client.pk, purpose=ApiToken.Purpose.CUSTOMER)
        .exclude(state__in=[ApiToken.State.TOKEN_ONLY, ApiToken.State.REMOVED])
        .only("code", "name", "state")
    )
    return {"tokens": tokens}
