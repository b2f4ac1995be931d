"""Benchmark: the health-check pipeline (sweep → Redis → K worker processes → sandbox API → PostgreSQL).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/agencyportal CELERY_BROKER_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/python bench/health_sweep.py [--n 2000] [--concurrency 4] [--latency-ms 150]

Seeds N grants of the sandbox user alice (2 accounts, 4 zones: each check is GET /accounts plus
one GET /zones per account = 3 API calls), makes every check due at once, runs the real sweep
against K worker processes, and prints checks per second, the bare-loop ceiling (the same three
calls per grant from K processes, no database or broker), their ratio, API calls per check, p95
lateness against the due time, CPU per check (worker processes + the PostgreSQL backends of the
benchmark database) and peak worker memory, for a first pass (each check maps the reach: writes)
and a second (nothing changed: the steady state), which the last line sums up:
`ratio=<pipeline/bare> api_calls_per_check=<x> cpu_ms_per_check=<x>`. Latency (--latency-ms) is
injected at the sandbox for the bare loop and the pipeline alike.

The synthetic grants each carry their own Cloudflare user id, so the per-user budget does not
serialise them; the global cap (--global-rate, default the production 100 req/s) does apply.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (  # noqa: E402
    DatabaseCpu,
    WorkerPool,
    log,
    p95,
    prepare_environment,
    purge_queue,
    run_bare_processes,
    setup_django,
    start_sandbox,
)


def _bare_worker(api_url: str, tokens: list[str], accounts: list[str]) -> int:
    import requests

    session = requests.Session()
    done = 0
    for token in tokens:
        headers = {"Authorization": f"Bearer {token}"}
        ok = session.get(f"{api_url}/accounts", headers=headers, params={"per_page": 50}, timeout=20).ok
        for account in accounts:
            ok &= session.get(
                f"{api_url}/zones", headers=headers, params={"account.id": account, "per_page": 50}, timeout=20
            ).ok
        done += ok
    return done


def bare_loop(sandbox, tokens: list[str], *, workers: int) -> float:
    from cloudflare_sandbox.seed import ACME_CORP_ID, ACME_STAGING_ID

    accounts = [ACME_CORP_ID, ACME_STAGING_ID]
    return run_bare_processes(_bare_worker, [(sandbox.api_url, tokens[i::workers], accounts) for i in range(workers)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2_000, help="grants (default 2,000)")
    parser.add_argument(
        "--concurrency", "--workers", dest="workers", type=int, default=4, help="concurrent checks K (default 4)"
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=8,
        help="GRANT_CHECK_BATCH: checks per task, run at once (default 8; 1: one task per grant)",
    )
    parser.add_argument("--processes", type=int, default=0, help="worker processes (default: concurrency / batch)")
    parser.add_argument("--latency-ms", type=int, default=150, help="API latency at the sandbox (default 150)")
    parser.add_argument("--ttl", type=int, default=3600, help="access token lifetime at the sandbox (s)")
    parser.add_argument("--sweep-interval", type=float, default=2.0, help="seconds between sweeps (beat: 60)")
    parser.add_argument("--global-rate", type=int, default=100, help="CLOUDFLARE_GLOBAL_RATE for the run")
    parser.add_argument("--user-budget", type=int, default=600, help="CLOUDFLARE_USER_BUDGET for the run")
    parser.add_argument("--bare-n", type=int, default=500, help="grants checked in the bare loop")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()

    args.batch = max(1, min(args.batch, args.workers))
    processes = args.processes or -(-args.workers // args.batch)
    os.environ["GRANT_CHECK_BATCH"] = str(args.batch)
    env = prepare_environment(args)
    setup_django(env)
    from django.utils import timezone

    from clients.models import Client
    from connections.models import Grant
    from connections.services.health import grants_dispatch_due_checks
    from tests.sandbox_grants import mint_grants, register_app

    sandbox = start_sandbox(access_ttl=args.ttl)
    pool = WorkerPool(concurrency=processes, log_path=Path(env["VAR_DIR"]) / "worker.log")
    try:
        client, _ = Client.objects.get_or_create(slug="bench", defaults={"name": "Bench client"})
        app = register_app(sandbox, name="Bench app")
        if args.latency_ms:
            sandbox.set_faults(latency_ms=args.latency_ms, latency_max_ms=args.latency_ms)

        log(f"bare loop: {args.bare_n} checks (3 API calls each) with {args.workers} processes")
        bare = mint_grants(sandbox, app=app, client=client, count=args.bare_n)
        ceiling = bare_loop(sandbox, [g.access_token for g in bare], workers=args.workers)
        Grant.objects.filter(pk__in=[g.pk for g in bare]).delete()
        log(f"bare loop: {ceiling:.1f} checks/s")

        log(f"seeding {args.n} grants at the sandbox")
        mint_grants(sandbox, app=app, client=client, count=args.n)
        pool.start()
        log(f"workers up ({processes} processes x {args.batch} checks per task); sweeping every {args.sweep_interval}s")

        def run_pass(label: str) -> dict:
            """Make every check due now, sweep until all are checked; figures for this pass."""
            now = timezone.now()
            Grant.objects.filter(app=app).update(
                next_check_at=now, last_checked_at=None, next_refresh_at=now + timedelta(days=1)
            )
            sandbox.reset_counters()
            cpu_before = pool.cpu_seconds()
            db_cpu = DatabaseCpu().start()
            t0 = time.monotonic()
            last_print = 0.0
            done = 0
            # Stop when nothing moved for 30 s: the rest were rescheduled (deferred / backing off).
            last_change, last_done = time.monotonic(), -1
            while done < args.n and time.monotonic() - t0 < args.timeout:
                grants_dispatch_due_checks()
                time.sleep(args.sweep_interval)
                done = Grant.objects.filter(app=app, last_checked_at__isnull=False).count()
                if done != last_done:
                    last_change, last_done = time.monotonic(), done
                elif time.monotonic() - last_change > 30:
                    log(f"{label}: no progress for 30 s: {args.n - done} grant(s) rescheduled for later")
                    break
                if time.monotonic() - last_print >= 5:
                    log(f"{label}: {done}/{args.n} checked, {done / (time.monotonic() - t0):.1f}/s")
                    last_print = time.monotonic()
            time.sleep(2)
            worker_cpu = pool.cpu_seconds() - cpu_before
            database_cpu = db_cpu.stop()
            checked = list(
                Grant.objects.filter(app=app, last_checked_at__isnull=False).values_list("last_checked_at", "health")
            )
            elapsed = (max(at for at, _ in checked) - now).total_seconds()
            calls = sandbox.state()["calls"]
            health: dict[str, int] = {}
            for _, h in checked:
                health[h] = health.get(h, 0) + 1
            return {
                "checked": len(checked),
                "elapsed": elapsed,
                "rate": len(checked) / elapsed,
                "api_calls": calls.get("api", 0),
                "token_calls": calls.get("token:refresh_token", 0),
                "lateness": [(at - now).total_seconds() for at, _ in checked],
                "worker_cpu_ms": worker_cpu * 1000 / max(1, len(checked)),
                "db_cpu_ms": database_cpu * 1000 / max(1, len(checked)),
                "health": health,
            }

        # The first check of a grant maps its accounts and zones (writes); later checks usually find
        # nothing new, which is the steady state: both are measured, the second is the figure.
        passes = {"first check (maps reach)": run_pass("first"), "re-check (nothing changed)": run_pass("re-check")}

        print()
        print(
            f"N={args.n} K={args.workers} ({processes} processes x batch {args.batch}) latency={args.latency_ms}ms sweep every {args.sweep_interval}s "
            f"global cap={args.global_rate}/s"
        )
        print(f"bare API loop (K={args.workers}):    {ceiling:.1f} checks/s")
        for label, f in passes.items():
            print(f"-- {label}")
            print(f"checked:                  {f['checked']}/{args.n} in {f['elapsed']:.1f}s")
            print(
                f"pipeline:                 {f['rate']:.1f} grants checked/s ({f['api_calls'] / f['elapsed']:.1f} API req/s)"
            )
            print(f"ratio pipeline/bare:      {f['rate'] / ceiling:.2f}")
            print(f"API calls per check:      {f['api_calls'] / max(1, f['checked']):.2f}")
            print(f"token calls:              {f['token_calls']}")
            print(f"p95 lateness vs due time: {p95(f['lateness']):.1f}s")
            print(
                f"CPU per check:            {f['worker_cpu_ms'] + f['db_cpu_ms']:.1f} ms "
                f"(worker {f['worker_cpu_ms']:.1f} ms, PostgreSQL {f['db_cpu_ms']:.1f} ms)"
            )
            print(f"health:                   {f['health']}")
        print(f"peak worker memory (RSS): {pool.peak_rss / 2**20:.0f} MiB for {args.workers + 1} processes")
        steady = passes["re-check (nothing changed)"]
        print(
            f"ratio={steady['rate'] / ceiling:.2f} api_calls_per_check={steady['api_calls'] / max(1, steady['checked']):.2f} "
            f"cpu_ms_per_check={steady['worker_cpu_ms'] + steady['db_cpu_ms']:.1f}"
        )
    finally:
        pool.stop()
        purge_queue()
        sandbox.stop()


if __name__ == "__main__":
    main()
