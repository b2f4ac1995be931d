"""Benchmark: admin page latency and query counts on a large fleet.

Seeds (once) N grants, C clients, Z zones and one API token per client into a database of its own,
then requests every admin page staff use with its common filters, searches and sorts (grants list
first page, filtered by status / health / scope coverage, searched, page 500, sorted by accounts;
a grant page; the dashboard; clients, OAuth apps, events, zones, API tokens and the migration
board) R times each through Django's test client, and prints p50 / p95 latency and the number of
SQL queries. The last line is `worst_p95_ms=<x> page=<name>`.

    python bench/admin_pages.py                      # 100,000 grants, 1,000 clients, 50,000 zones
    python bench/admin_pages.py --grants 10000 --clients 100 --zones 5000
    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/agencyportal_bench_admin python bench/admin_pages.py

The database defaults to var/bench-admin.sqlite3; it is reused between runs when its size matches
(`--reseed` starts over). Run by hand; not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import ensure_database  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grants", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=1_000)
    parser.add_argument("--zones", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=20, help="requests per page (default 20)")
    parser.add_argument("--reseed", action="store_true", help="drop the benchmark data and seed again")
    args = parser.parse_args()

    os.environ["DATABASE_URL"] = os.environ.get(
        "BENCH_DATABASE_URL", f"sqlite:///{ROOT / 'var' / 'bench-admin.sqlite3'}"
    )
    ensure_database(os.environ["DATABASE_URL"])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agencyportal.settings")
    os.environ["STAFF_OTP_REQUIRED"] = "False"
    (ROOT / "var").mkdir(exist_ok=True)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.ALLOWED_HOSTS = ["testserver", *settings.ALLOWED_HOSTS]
    settings.DEBUG = False
    print(
        f"Database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]} {settings.DATABASES['default']['NAME']}"
    )
    call_command("migrate", verbosity=0)
    seed(args)
    analyze()
    measure(args)


def seed(args) -> None:
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from apitokens.models import ApiToken
    from clients.models import Client, CloudflareAccount, Zone
    from connections import crypto
    from connections.models import Grant, GrantEvent, OAuthApp

    if (
        not args.reseed
        and Grant.objects.count() == args.grants
        and Client.objects.count() == args.clients
        and ApiToken.objects.count() == args.clients
    ):
        print(f"Reusing {args.grants} grants, {args.clients} clients, {Zone.objects.count()} zones.")
        return
    started = time.monotonic()
    print("Seeding...", flush=True)
    with transaction.atomic():
        for model in (ApiToken, GrantEvent, Grant, Zone, CloudflareAccount, Client, OAuthApp):
            model.objects.all().delete()
        User = get_user_model()
        User.objects.filter(username="bench-admin").delete()
        manager = User.objects.create_superuser("bench-admin", "bench@agency.example", secrets.token_urlsafe(16))
        app = OAuthApp(name="Bench app", client_id="bench", redirect_uri="https://portal.example/cb/", is_default=True)
        app.required_scopes = ["user-details.read", "account-settings.read", "zone.read", "dns.read"]
        app.optional_scopes = ["dns.write"]
        app.set_client_secret("bench-secret")
        app.save()
        clients = Client.objects.bulk_create(
            [
                Client(name=f"Client {i:05d}", slug=f"client-{i:05d}", account_manager=manager)
                for i in range(args.clients)
            ]
        )
        accounts = CloudflareAccount.objects.bulk_create(
            [
                CloudflareAccount(client=c, cf_account_id=secrets.token_hex(16), name=f"{c.name} account")
                for c in clients
            ]
        )
        Zone.objects.bulk_create(
            [
                Zone(
                    account=accounts[i % len(accounts)],
                    cf_zone_id=secrets.token_hex(16),
                    name=f"zone{i:06d}.example",
                    status="active",
                )
                for i in range(args.zones)
            ],
            batch_size=5000,
        )
        print(f"  {len(clients)} clients, {len(accounts)} accounts, {args.zones} zones", flush=True)
        now = timezone.now()
        statuses = (
            ["active"] * 90 + ["refresh_failing"] * 3 + ["needs_reconsent"] * 2 + ["revoked"] * 3 + ["disconnected"] * 2
        )
        # One token pair, encrypted once per batch (a single UPDATE): encryption is not what is measured.
        access, refresh = "cfoat_" + secrets.token_urlsafe(32), "cfort_" + secrets.token_urlsafe(32)
        batch: list[Grant] = []
        through = Grant.accounts.through
        for i in range(args.grants):
            status = statuses[i % len(statuses)]
            ended = status in ("revoked", "disconnected")
            g = Grant(
                client=clients[i % len(clients)],
                app=app,
                cf_user_id=f"{i:032x}",
                cf_user_email=f"owner{i}@client{i % len(clients)}.example",
                requested_scopes=app.all_scopes,
                # Every 7th declined the optional scope; every 50th lacks a required one.
                granted_scopes=[
                    s for s in (app.all_scopes if i % 7 else app.all_scopes[:-1]) if i % 50 != 3 or s != "dns.read"
                ],
                declined_scopes=[] if i % 7 else ["dns.write"],
                status=status,
                health=["healthy", "healthy", "degraded", "failing", "unknown"][i % 5],
                access_expires_at=now + timezone.timedelta(minutes=i % 600),
                next_refresh_at=now + timezone.timedelta(minutes=i % 600),
                ended_at=now if ended else None,
            )
            if not ended:
                g.access_token_fp, g.refresh_token_fp = crypto.fingerprint(access), crypto.fingerprint(refresh)
            batch.append(g)
            if len(batch) == 5000 or i == args.grants - 1:
                created = Grant.objects.bulk_create(batch)
                through.objects.bulk_create(
                    [
                        through(grant_id=g.pk, cloudflareaccount_id=accounts[(g.pk or 0) % len(accounts)].pk)
                        for g in created
                    ]
                )
                live_ids = [g.pk for g in created if g.status not in ("revoked", "disconnected")]
                Grant.objects.filter(pk__in=live_ids).update(access_token=access, refresh_token=refresh)
                GrantEvent.objects.bulk_create(
                    [GrantEvent(grant=g, client_id=g.client_id, kind="connected") for g in created]
                )
                batch = []
                print(f"  {i + 1}/{args.grants} grants", flush=True)
        # One API token per client (the migration off tokens), spread over the migration states.
        states = [value for value, _ in ApiToken.State.choices]
        tokens = ApiToken.objects.bulk_create(
            [
                ApiToken(
                    client=c,
                    name=f"{c.name} token",
                    token_fp=crypto.fingerprint(f"token-{i}"),
                    state=states[i % len(states)],
                )
                for i, c in enumerate(clients)
            ]
        )
        ApiToken.objects.filter(pk__in=[t.pk for t in tokens]).update(token="cfat_" + secrets.token_urlsafe(32))
    print(f"Seeded in {time.monotonic() - started:.0f} s.")


def analyze() -> None:
    """VACUUM ANALYZE on PostgreSQL, as autovacuum does in production: without statistics the
    planner guesses a few hundred rows for a table of 100,000 and picks nested loops."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")


def measure(args) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client as HttpClient
    from django.test.utils import CaptureQueriesContext

    from clients.models import Client
    from connections.models import Grant

    http = HttpClient()
    http.force_login(get_user_model().objects.get(username="bench-admin"))
    grant = Grant.objects.order_by("pk")[args.grants // 2]
    client = Client.objects.order_by("pk")[args.clients // 2]
    grants = "/admin/connections/grant/"
    pages = {
        "grants list": grants,
        "grants, status + health": f"{grants}?status__exact=active&health__exact=failing",
        "grants, status": f"{grants}?status__exact=refresh_failing",
        "grants, health": f"{grants}?health__exact=degraded",
        "grants, scope missing": f"{grants}?coverage=missing",
        "grants, optional declined": f"{grants}?coverage=partial",
        "grants, needs attention": f"{grants}?attention=health",
        "grants, search email": f"{grants}?q=owner{args.grants // 3}%40",
        "grants, search zone": f"{grants}?q=zone{args.zones // 3:06d}",
        "grants, page 500": f"{grants}?p=500",
        "grants, by accounts": f"{grants}?o=6",
        "grants, by email": f"{grants}?o=1",
        "grant page": f"{grants}{grant.pk}/change/",
        "dashboard": "/admin/",
        "clients list": "/admin/clients/client/",
        "clients, search": f"/admin/clients/client/?q=Client+{args.clients // 3:05d}",
        "clients, connection broken": "/admin/clients/client/?connection=broken",
        "clients, by zones": "/admin/clients/client/?o=8",
        "client page": f"/admin/clients/client/{client.pk}/change/",
        "oauth apps": "/admin/connections/oauthapp/",
        "events list": "/admin/connections/grantevent/",
        "events, search": f"/admin/connections/grantevent/?q=owner{args.grants // 4}%40",
        "events, category": "/admin/connections/grantevent/?category=revoked",
        "accounts list": "/admin/clients/cloudflareaccount/",
        "zones list": "/admin/clients/zone/",
        "zones, search": f"/admin/clients/zone/?q=zone{args.zones // 5:06d}",
        "alerts list": "/admin/connections/alert/",
        "api tokens": "/admin/apitokens/apitoken/",
        "migration board": "/admin/apitokens/apitoken/board/",
    }
    print(f"\n{'page':<30} {'p50 ms':>8} {'p95 ms':>8} {'queries':>8}")
    worst = (0.0, "")
    for label, url in pages.items():
        timings = []
        for _ in range(args.repeat):
            with CaptureQueriesContext(connection) as ctx:
                started = time.perf_counter()
                response = http.get(url)
                timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (url, response.status_code)
        timings.sort()
        p95 = timings[min(len(timings) - 1, int(round(0.95 * (len(timings) - 1))))]
        worst = max(worst, (p95, label))
        print(f"{label:<30} {statistics.median(timings):>8.1f} {p95:>8.1f} {len(ctx.captured_queries):>8}", flush=True)
    print(f"worst_p95_ms={worst[0]:.1f} page={worst[1].replace(' ', '_').replace(',', '')}")


if __name__ == "__main__":
    main()
