"""The fleet dashboard: a handful of aggregate queries, whatever the fleet size, and SVG charts
rendered on the server (no CDN, no script, nothing for the CSP to allow)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from urllib.parse import urlencode

from django.db.models import Count, Exists, OuterRef, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from connections.models import LIVE_STATUSES, Grant

from .models import DailyFleetStats

EXPIRING_SOON = timedelta(hours=1)
REVOKED_RECENTLY = timedelta(days=7)
REFRESH_OVERDUE = timedelta(minutes=5)  # same as the grant list's "Refresh overdue" filter
CHART_DAYS = 30

HEALTH_COLOURS = {"healthy": "#2e7d32", "degraded": "#f9a825", "failing": "#c62828", "unknown": "#9e9e9e"}


@dataclass(frozen=True)
class Tile:
    label: str
    value: int
    url: str
    tone: str = "neutral"  # neutral / good / warn / bad


def _changelist(model: str, **params: str) -> str:
    return (
        f"{reverse(f'admin:{model}_changelist')}?{urlencode(params)}"
        if params
        else reverse(f"admin:{model}_changelist")
    )


def fleet_summary(*, grants, clients, alerts, now=None) -> dict:
    """Counts for the tiles. `grants`, `clients`, `alerts` are the caller's (role-scoped) querysets.

    Three queries: one aggregate over grants, one over clients, one over alerts. The grants'
    aggregate also counts live grants by health (`health_today`, today's bar of the chart): one
    pass over the table for both.
    """
    now = now or timezone.now()
    live = Q(status__in=LIVE_STATUSES)
    g = grants.aggregate(
        total=Count("id"),
        active=Count("id", filter=Q(status=Grant.Status.ACTIVE)),
        refresh_failing=Count("id", filter=Q(status=Grant.Status.REFRESH_FAILING)),
        needs_reconsent=Count("id", filter=Q(status__in=[Grant.Status.NEEDS_RECONSENT, Grant.Status.LOST])),
        disconnecting=Count("id", filter=Q(status=Grant.Status.DISCONNECTING)),
        expiring=Count("id", filter=live & Q(access_expires_at__lte=now + EXPIRING_SOON)),
        overdue=Count(
            "id",
            filter=Q(status__in=["active", "refresh_failing"], next_refresh_at__lt=now - REFRESH_OVERDUE),
        ),
        revoked_7d=Count("id", filter=Q(status=Grant.Status.REVOKED, ended_at__gte=now - REVOKED_RECENTLY)),
        failing_checks=Count("id", filter=live & Q(health__in=[Grant.Health.FAILING, Grant.Health.DEGRADED])),
        **{f"health_{h}": Count("id", filter=live & Q(health=h)) for h in Grant.Health.values},
    )
    has_live_grant = Grant.objects.filter(client=OuterRef("pk"), status__in=LIVE_STATUSES)
    c = clients.filter(is_active=True).aggregate(
        total=Count("id"), without_grant=Count("id", filter=~Q(Exists(has_live_grant)))
    )
    open_alerts = alerts.filter(resolved_at__isnull=True, acknowledged_at__isnull=True).count()
    since = (now - REVOKED_RECENTLY).strftime("%Y-%m-%d")
    tiles = [
        Tile("Active grants", g["active"], _changelist("connections_grant", status__exact="active"), "good"),
        Tile(
            "Refresh failing",
            g["refresh_failing"],
            _changelist("connections_grant", status__exact="refresh_failing"),
            "bad",
        ),
        Tile("Needs re-consent", g["needs_reconsent"], _changelist("connections_grant", attention="reconsent"), "warn"),
        # Normal for tokens about to be refreshed; "refresh overdue" is the one that means trouble.
        Tile("Access expiring within 1 h", g["expiring"], _changelist("connections_grant", expiry="soon")),
        Tile("Refresh overdue", g["overdue"], _changelist("connections_grant", expiry="overdue"), "bad"),
        Tile(
            "Revoked in the last 7 days",
            g["revoked_7d"],
            _changelist("connections_grant", status__exact="revoked", ended_at__gte=since),
            "bad",
        ),
        Tile("Failing health checks", g["failing_checks"], _changelist("connections_grant", attention="health"), "bad"),
        Tile(
            "Revocation pending",
            g["disconnecting"],
            _changelist("connections_grant", status__exact="disconnecting"),
            "warn",
        ),
        Tile("Clients with no grant", c["without_grant"], _changelist("clients_client", connection="none"), "warn"),
        Tile("Open alerts", open_alerts, _changelist("connections_alert", open="yes", acknowledged="no"), "bad"),
    ]
    health = {h: g[f"health_{h}"] for h in Grant.Health.values if g[f"health_{h}"]}
    return {"tiles": tiles, "grants_total": g["total"], "clients_total": c["total"], "health_today": health}


def health_history(
    *, today_counts: dict | None = None, today: date | None = None, days: int = CHART_DAYS
) -> list[tuple[date, dict]]:
    """(day, {health: count}) for each of the last `days` days, from the daily snapshots (one query).

    Days without a snapshot are empty; `today_counts` replaces today's snapshot with live figures.
    """
    today = today or timezone.localdate()
    start = today - timedelta(days=days - 1)
    rows = {
        r["date"]: r["grants_by_health"]
        for r in DailyFleetStats.objects.filter(date__gte=start, date__lte=today).values("date", "grants_by_health")
    }
    if today_counts is not None:
        rows[today] = today_counts
    return [(start + timedelta(days=i), rows.get(start + timedelta(days=i), {})) for i in range(days)]


def refresh_success_history(*, today: date | None = None, days: int = CHART_DAYS) -> list[tuple[date, int, int, int]]:
    """(day, refreshes that succeeded, failed, found the grant revoked) per day, fleet-wide. One query."""
    today = today or timezone.localdate()
    start = today - timedelta(days=days - 1)
    rows = {
        r["date"]: (r["refresh_ok"], r["refresh_failed"], r["refresh_ended"])
        for r in DailyFleetStats.objects.filter(date__gte=start, date__lte=today).values(
            "date", "refresh_ok", "refresh_failed", "refresh_ended"
        )
    }
    return [(start + timedelta(days=i), *rows.get(start + timedelta(days=i), (0, 0, 0))) for i in range(days)]


def health_today(*, grants) -> dict:
    """Today's bar, live: the snapshot task runs hourly, the dashboard should not lag. One query."""
    live = grants.filter(status__in=LIVE_STATUSES)
    return {r["health"]: r["n"] for r in live.values("health").annotate(n=Count("id")).order_by()}


# --- SVG -----------------------------------------------------------------------------------------

WIDTH, HEIGHT, PAD = 600, 160, 24


def health_chart_svg(history: list[tuple[date, dict]]) -> str:
    """A stacked bar per day: healthy / degraded / failing / unknown grants."""
    peak = max((sum(h.values()) for _, h in history), default=0) or 1
    bars = []
    for i, (day, health) in enumerate(history):
        top = 0.0
        for key in ("healthy", "degraded", "failing", "unknown"):
            n = int(health.get(key, 0))
            if n:
                bars.append((i, top, n / peak, HEALTH_COLOURS[key], f"{day:%d %b}: {n} {key}"))
                top += n / peak
    return _svg("Grant health per day, last 30 days", history, bars, peak)


def refresh_chart_svg(history: list[tuple]) -> str:
    """Refresh success rate per day as bars (days without refreshes are left empty).

    Refreshes that found a grant revoked are not failures: they are left out of the rate and named
    in the tooltip."""
    bars = []
    for i, (day, ok, failed, *rest) in enumerate(history):
        ended = rest[0] if rest else 0
        if ok + failed:
            rate = ok / (ok + failed)
            tone = "healthy" if rate >= 0.99 else "degraded" if rate >= 0.9 else "failing"
            note = f"; {ended} found the grant revoked" if ended else ""
            bars.append(
                (
                    i,
                    0.0,
                    rate,
                    HEALTH_COLOURS[tone],
                    f"{day:%d %b}: {rate:.1%} of {ok + failed} refreshes succeeded{note}",
                )
            )
    return _svg("Refresh success rate per day, last 30 days", history, bars, "100%")


def _svg(title: str, history: list[tuple], bars: list[tuple[int, float, float, str, str]], peak) -> str:
    """The chart frame and its bars. A bar is (day index, bottom, height, colour, tooltip), with
    bottom and height as fractions of the plot height (stacked bars start where the last ended)."""
    plot_h = HEIGHT - 2 * PAD
    bar_w = (WIDTH - 2 * PAD) / max(len(history), 1)
    rects = [
        (
            f"{PAD + i * bar_w + 1:.1f}",
            f"{HEIGHT - PAD - (bottom + height) * plot_h:.1f}",
            f"{max(bar_w - 2, 1):.1f}",
            f"{height * plot_h:.1f}",
            colour,
            tooltip,
        )
        for i, bottom, height, colour, tooltip in bars
    ]
    body = format_html_join("", '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>', rects)
    first, last = (history[0][0], history[-1][0]) if history else (None, None)
    return format_html(
        '<svg class="fleet-chart" viewBox="0 0 {w} {h}" role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg">'
        "<title>{t}</title>"
        '<line x1="{p}" y1="{base}" x2="{right}" y2="{base}" stroke="#888" stroke-width="1"/>'
        '<text x="{p}" y="{top}" font-size="10" fill="#666">{peak}</text>'
        '<text x="{p}" y="{h}" font-size="10" fill="#666">{first}</text>'
        '<text x="{right}" y="{h}" font-size="10" fill="#666" text-anchor="end">{last}</text>'
        "{body}</svg>",
        w=WIDTH,
        h=HEIGHT,
        t=title,
        p=PAD,
        base=HEIGHT - PAD,
        right=WIDTH - PAD,
        top=PAD - 6,
        peak=peak,
        first=f"{first:%d %b}" if first else "",
        last=f"{last:%d %b}" if last else "",
        body=body,
    )


def fleet_stats_record(*, now=None) -> DailyFleetStats:
    """Upsert today's snapshot of grant health and status (two aggregate queries)."""
    now = now or timezone.now()
    live = Grant.objects.filter(status__in=LIVE_STATUSES)
    by_health = {r["health"]: r["n"] for r in live.values("health").annotate(n=Count("id")).order_by()}
    by_status = {r["status"]: r["n"] for r in Grant.objects.values("status").annotate(n=Count("id")).order_by()}
    # Only the snapshot fields: the refresh counters of the same row are written by the workers.
    stats, _ = DailyFleetStats.objects.update_or_create(
        date=timezone.localdate(now),
        defaults={"grants_by_health": by_health, "grants_by_status": by_status, "recorded_at": now},
    )
    return stats
