"""Benchmark: a bulk cache purge (dry run, confirm, K worker processes, the sandbox, PostgreSQL).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/agencyportal CELERY_BROKER_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/python bench/bulk_change.py [--zones 1000] [--grants 100] [--workers 4] [--latency-ms 150]

Seeds `--grants` clients, each a Cloudflare user at the sandbox with one account of
zones/grants zones and a real grant; injects `--latency-ms` at the sandbox's API (Cloudflare
answers in 100–300 ms); runs a "purge everything" bulk change over every zone through the real
pipeline (items queued after commit, K worker processes, the gate, the SDK client, the action
record) and, in the same run, a bare loop of the same API calls (one POST purge_cache per zone
with the zone's grant token, K processes, no database, no broker). Prints:

- items per second through the pipeline (from confirm to the last item settled);
- the same for the bare loop: the ceiling; and their ratio (goal ≥ 0.8);
- API calls per item, from the sandbox's own counters (goal 1.00);
- the dry run's duration and its API calls (a purge's dry run is the gate alone: 0);
- peak memory of the worker processes (RSS, parent + pool);

and, last, one line `ratio=<pipeline/bare> calls_per_item=<x>`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (  # noqa: E402
    WorkerPool,
    log,
    prepare_environment,
    purge_queue,
    run_bare_processes,
    setup_django,
    start_sandbox,
)


def _bare_worker(api_url: str, jobs: list[tuple[str, str]]) -> int:
    import requests

    session = requests.Session()
    done = 0
    for token, zone_id in jobs:
        response = session.post(
            f"{api_url}/zones/{zone_id}/purge_cache",
            json={"purge_everything": True},
            headers={"Authorization": f"Bearer {token}"},
            timeout=20,
        )
        done += response.status_code == 200
    return done


def bare_loop(api_url: str, jobs: list[tuple[str, str]], *, workers: int) -> float:
    return run_bare_processes(_bare_worker, [(api_url, jobs[i::workers]) for i in range(workers)])


def _api_calls(sandbox) -> int:
    return sum(n for key, n in sandbox.calls().items() if "/client/v4" in key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zones", type=int, default=1000, help="zones in the change (default 1,000)")
    parser.add_argument("--grants", type=int, default=100, help="clients / grants they spread over (default 100)")
    parser.add_argument("--workers", type=int, default=4, help="worker processes K (default 4)")
    parser.add_argument("--latency-ms", type=int, default=150, help="latency injected at the sandbox API")
    parser.add_argument("--global-rate", type=int, default=1000, help="CLOUDFLARE_GLOBAL_RATE for the run")
    parser.add_argument("--user-budget", type=int, default=600, help="CLOUDFLARE_USER_BUDGET for the run")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    per_grant = max(1, args.zones // args.grants)

    env = prepare_environment(args)
    setup_django(env)
    from django.contrib.auth import get_user_model

    from changes.models import Change, ChangeItem
    from changes.services import change_confirm, change_counts, change_create
    from clients.models import Client, Zone
    from connections.models import Grant
    from tests.operations.conftest import OPTIONAL, sandbox_grant
    from tests.sandbox_grants import register_app, unique_label

    sandbox = start_sandbox(access_ttl=3600)
    pool = WorkerPool(concurrency=args.workers, log_path=Path(env["VAR_DIR"]) / "worker.log")
    try:
        staff, _ = get_user_model().objects.get_or_create(
            username="bench-staff", defaults={"is_staff": True, "is_superuser": True}
        )
        app = register_app(sandbox, name="Bench bulk app", optional=tuple(OPTIONAL))
        label = unique_label()
        log(f"seeding {args.grants} clients × {per_grant} zones at the sandbox, one grant each")
        started = time.monotonic()
        for n in range(args.grants):
            slug = f"bulk-{label}-{n:03d}"
            email = f"{slug}@example.com"
            sandbox.add_user(email=email, accounts=[{"name": f"{slug} account", "zones": per_grant}])
            client = Client.objects.create(name=f"Bulk {n:03d}", slug=slug)
            sandbox_grant(sandbox, client=client, user_email=email, app=app)
        zones = list(Zone.objects.filter(account__client__slug__startswith=f"bulk-{label}-").select_related("account"))
        log(
            f"seeded {len(zones)} zones over {Grant.objects.filter(app=app).count()} grants in {time.monotonic() - started:.1f}s"
        )

        tokens = {}
        for grant in Grant.objects.filter(app=app).prefetch_related("accounts"):
            for account in grant.accounts.all():
                tokens[account.pk] = grant.access_token
        jobs = [(tokens[z.account_id], z.cf_zone_id) for z in zones]

        sandbox.set_faults(latency_ms=args.latency_ms, latency_endpoints=["api"])
        log(f"bare loop: {len(jobs)} purge calls with {args.workers} processes at {args.latency_ms} ms")
        sandbox.reset_counters()
        ceiling = bare_loop(f"{sandbox.base_url}/client/v4", jobs, workers=args.workers)
        log(f"bare loop: {ceiling:.1f} purges/s")

        pool.start()
        sandbox.reset_counters()
        t0 = time.monotonic()
        change = change_create(user=staff, plan_id="cache.purge", inputs={"mode": "everything"}, zones=zones)
        while Change.objects.get(pk=change.pk).status == Change.Status.PREVIEWING:
            if time.monotonic() - t0 > args.timeout:
                sys.exit("dry run did not finish")
            time.sleep(0.2)
        dry_run_s = time.monotonic() - t0
        dry_run_calls = _api_calls(sandbox)
        log(f"dry run: {dry_run_s:.1f}s, {change_counts(change.pk)}")

        change.refresh_from_db()
        sandbox.reset_counters()
        t1 = time.monotonic()
        queued = change_confirm(change=change, user=staff)
        last_print = 0.0
        while ChangeItem.objects.filter(change=change, status__in=["queued", "running"]).exists():
            if time.monotonic() - t1 > args.timeout:
                break
            time.sleep(0.2)
            if time.monotonic() - last_print >= 5:
                counts = change_counts(change.pk)
                log(f"progress: {counts.get('done', 0)}/{queued} done")
                last_print = time.monotonic()
        elapsed = time.monotonic() - t1
        counts = change_counts(change.pk)
        calls = _api_calls(sandbox)
        rate = counts.get("done", 0) / elapsed

        print()
        print(
            f"zones={len(zones)} grants={args.grants} K={args.workers} latency={args.latency_ms}ms "
            f"global cap={args.global_rate}/s"
        )
        print(f"items:                    {counts}")
        print(f"dry run:                  {dry_run_s:.1f}s, {dry_run_calls} API calls")
        print(f"pipeline:                 {rate:.1f} items/s ({elapsed:.1f}s)")
        print(f"bare purge loop (K={args.workers}):  {ceiling:.1f} calls/s")
        print(f"ratio pipeline/bare:      {rate / ceiling:.2f}")
        per_item = calls / max(1, counts.get("done", 0))
        print(f"API calls per item:       {per_item:.2f} ({calls} calls)")
        print(f"peak worker memory (RSS): {pool.peak_rss / 2**20:.0f} MiB for {args.workers + 1} processes")
        print(f"ratio={rate / ceiling:.2f} calls_per_item={per_item:.2f}")
    finally:
        pool.stop()
        purge_queue()
        sandbox.stop()


if __name__ == "__main__":
    main()
