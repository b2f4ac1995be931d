"""Benchmark: the refresh pipeline (sweep → Redis → K worker processes → sandbox → PostgreSQL).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/agencyportal CELERY_BROKER_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/python bench/refresh_sweep.py [--n 2000] [--concurrency 4] [--latency-ms 150] [--pool prefork]

Seeds N grants (minted at the sandbox with POST /__sandbox__/grants, then bulk_create'd as portal
grants with the same tokens), makes them due (all at once, or spread over --spread seconds), runs
the real sweep every --sweep-interval seconds against K worker processes, and prints:

- grants refreshed per second through the pipeline;
- the same figure for a bare loop of token calls at the same concurrency (K processes): the ceiling;
- their ratio;
- token calls per refresh, from the sandbox's own counters (must be 1.00);
- p95 lateness of refreshes against their due time;
- peak memory of the worker processes (RSS, parent + pool);
- CPU per refresh: the worker processes' user + system time plus that of the PostgreSQL backends
  serving the benchmark database, over the pipeline run, divided by the refreshes.

Latency is injected at the sandbox's token endpoint (real Cloudflare answers in 100–300 ms) for
both the bare loop and the pipeline. The last line sums it up:
`ratio=<pipeline/bare> calls_per_refresh=<x> reuse=<n> cpu_ms_per_refresh=<x>`.
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


def _bare_worker(token_url: str, client_id: str, secret: str, tokens: list[str]) -> int:
    import requests

    session = requests.Session()
    done = 0
    for token in tokens:
        response = session.post(
            token_url,
            data={"grant_type": "refresh_token", "refresh_token": token},
            auth=(client_id, secret),
            timeout=20,
        )
        done += response.status_code == 200
    return done


def bare_loop(sandbox, app, client, *, count: int, workers: int) -> float:
    """Refreshes per second of K processes doing nothing but token calls (no DB, no broker)."""
    from tests.sandbox_grants import mint_grants

    minted = mint_grants(sandbox, app=app, client=client, count=count)
    tokens = [g.refresh_token for g in minted]
    from connections.models import Grant

    Grant.objects.filter(pk__in=[g.pk for g in minted]).delete()
    url = sandbox.token_url()
    return run_bare_processes(
        _bare_worker, [(url, app.client_id, app.client_secret, tokens[i::workers]) for i in range(workers)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2_000, help="grants (default 2,000)")
    parser.add_argument(
        "--concurrency", "--workers", dest="workers", type=int, default=4, help="concurrent refreshes K (default 4)"
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=16,
        help="GRANT_REFRESH_BATCH: token calls in flight per worker process (default 16; 1: one task per grant)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=0,
        help="worker processes (default: concurrency / batch, rounded up)",
    )
    parser.add_argument(
        "--pool", default="prefork", choices=["prefork", "threads"], help="Celery pool (default prefork)"
    )
    parser.add_argument(
        "--latency-ms", type=int, default=150, help="token endpoint latency at the sandbox (default 150)"
    )
    parser.add_argument("--ttl", type=int, default=300, help="access token lifetime at the sandbox (s)")
    parser.add_argument("--spread", type=float, default=0.0, help="spread the due times over S seconds")
    parser.add_argument("--sweep-interval", type=float, default=2.0, help="seconds between sweeps (beat: 60)")
    parser.add_argument("--global-rate", type=int, default=1000, help="CLOUDFLARE_GLOBAL_RATE for the run")
    parser.add_argument("--user-budget", type=int, default=600, help="CLOUDFLARE_USER_BUDGET for the run")
    parser.add_argument("--bare-n", type=int, default=2000, help="token calls in the bare loop")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()

    args.batch = max(1, min(args.batch, args.workers))
    processes = args.processes or -(-args.workers // args.batch)
    os.environ["GRANT_REFRESH_BATCH"] = str(args.batch)
    env = prepare_environment(args)
    setup_django(env)
    from django.db.models.expressions import RawSQL
    from django.db.models.functions import Now

    from clients.models import Client
    from connections.models import Grant
    from connections.services.refresh import grants_dispatch_due_refreshes
    from tests.sandbox_grants import mint_grants, register_app

    sandbox = start_sandbox(access_ttl=args.ttl)
    pool = WorkerPool(concurrency=processes, pool=args.pool, log_path=Path(env["VAR_DIR"]) / "worker.log")
    try:
        client, _ = Client.objects.get_or_create(slug="bench", defaults={"name": "Bench client"})
        app = register_app(sandbox, name="Bench app")
        if args.latency_ms:
            sandbox.set_faults(latency_ms=args.latency_ms, latency_max_ms=args.latency_ms, latency_endpoints=["token"])

        log(f"bare loop: {args.bare_n} token calls with {args.workers} processes")
        ceiling = bare_loop(sandbox, app, client, count=args.bare_n, workers=args.workers)
        log(f"bare loop: {ceiling:.1f} refreshes/s")

        log(f"seeding {args.n} grants at the sandbox (access TTL {args.ttl}s)")
        started = time.monotonic()
        grants = mint_grants(sandbox, app=app, client=client, count=args.n)
        log(f"seeded in {time.monotonic() - started:.1f}s")

        del grants
        pool.start()
        # Due from the moment the workers are up (their start-up is not the pipeline's time), in one
        # statement: the pipeline's clock starts with the statement, so the time the benchmark takes
        # to make them due is counted against the pipeline, not hidden; keep it short.
        Grant.objects.filter(app=app).update(
            next_refresh_at=RawSQL("now() + random() * %s * interval '1 second'", [args.spread]),
            authorized_at=Now() - timedelta(seconds=args.ttl),
            access_expires_at=Now() + timedelta(seconds=args.ttl * 0.2),
        )
        due = dict(Grant.objects.filter(app=app).values_list("pk", "next_refresh_at"))
        sandbox.reset_counters()
        cpu_before = pool.cpu_seconds()
        db_cpu = DatabaseCpu().start()
        log(f"workers up ({processes} processes x {args.batch} grants per task); sweeping every {args.sweep_interval}s")
        t0 = time.monotonic()
        last_print = 0.0
        done = 0
        # Stop when nothing moved for 30 s: the rest were rescheduled (deferred / backing off).
        last_change, last_done = time.monotonic(), -1
        while done < args.n and time.monotonic() - t0 < args.timeout:
            grants_dispatch_due_refreshes()
            time.sleep(args.sweep_interval)
            done = Grant.objects.filter(app=app, refresh_generation__gte=1).count()
            if done != last_done:
                last_change, last_done = time.monotonic(), done
            elif time.monotonic() - last_change > 30:
                log(f"no progress for 30 s: {args.n - done} grant(s) rescheduled for later")
                break
            if time.monotonic() - last_print >= 5:
                elapsed = time.monotonic() - t0
                log(f"progress: {done}/{args.n} refreshed, {done / elapsed:.1f}/s")
                last_print = time.monotonic()
        time.sleep(3)  # let refreshes in flight land before counting
        worker_cpu = pool.cpu_seconds() - cpu_before
        database_cpu = db_cpu.stop()
        refreshed = Grant.objects.filter(app=app, refresh_generation__gte=1)
        finished = list(refreshed.values_list("pk", "last_refreshed_at"))
        first_due = min(due.values())
        last = max(at for _, at in finished)
        elapsed = (last - first_due).total_seconds()
        rate = len(finished) / elapsed
        lateness = [(at - due[pk]).total_seconds() for pk, at in finished]
        from django.db.models import Sum

        # A grant refreshed twice during a long run (short TTL) counts twice: calls per *refresh*.
        refreshes = Grant.objects.filter(app=app).aggregate(n=Sum("refresh_generation"))["n"] or 0
        calls = sandbox.state()["calls"].get("token:refresh_token", 0)
        reuse = sandbox.state(client_id=app.client_id)["reuse_count"]
        statuses = dict.fromkeys(("active", "refresh_failing", "revoked", "lost"), 0)
        for status in Grant.objects.filter(app=app).values_list("status", flat=True):
            statuses[status] = statuses.get(status, 0) + 1

        print()
        print(
            f"N={args.n} K={args.workers} ({processes} {args.pool} processes x batch {args.batch}) latency={args.latency_ms}ms access_ttl={args.ttl}s sweep every {args.sweep_interval}s "
            f"spread={args.spread}s global cap={args.global_rate}/s"
        )
        print(f"refreshed:                {len(finished)}/{args.n} in {elapsed:.1f}s")
        print(f"pipeline:                 {rate:.1f} grants refreshed/s")
        print(f"bare token loop (K={args.workers}):  {ceiling:.1f} refreshes/s")
        print(f"ratio pipeline/bare:      {rate / ceiling:.2f}")
        print(f"token calls per refresh:  {calls / max(1, refreshes):.2f} ({calls} calls, {refreshes} refreshes)")
        print(f"refresh-token reuses:     {reuse}")
        print(f"p95 lateness vs due time: {p95(lateness):.1f}s (max {max(lateness):.1f}s)")
        print(f"peak worker memory (RSS): {pool.peak_rss / 2**20:.0f} MiB ({processes} {args.pool} processes)")
        per = 1000 / max(1, refreshes)
        print(
            f"CPU per refresh:          {(worker_cpu + database_cpu) * per:.1f} ms "
            f"(worker {worker_cpu * per:.1f} ms, PostgreSQL {database_cpu * per:.1f} ms)"
        )
        print(f"grant statuses:           {statuses}")
        print(
            f"ratio={rate / ceiling:.2f} calls_per_refresh={calls / max(1, refreshes):.2f} reuse={reuse} "
            f"cpu_ms_per_refresh={(worker_cpu + database_cpu) * per:.1f}"
        )
    finally:
        pool.stop()
        purge_queue()
        sandbox.stop()


if __name__ == "__main__":
    main()
