"""Shared plumbing for the engine benchmarks: a dedicated database, the sandbox, worker processes.

The benchmarks never touch the development database: they create (or reuse) `<db>_bench` on the
PostgreSQL server of `DATABASE_URL` (or a throwaway SQLite file when DATABASE_URL is not
PostgreSQL), migrate it, and point the workers at it. Redis is the broker (CELERY_BROKER_URL).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
CELERY = str(Path(sys.executable).with_name("celery"))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def prepare_environment(args) -> dict[str, str]:
    """Environment for this process and the workers: bench database, broker, keys, queue."""
    from cryptography.fernet import Fernet

    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/agencyportal")
    parts = urlsplit(url)
    if parts.scheme.startswith("postgres"):
        bench_db = (parts.path.lstrip("/") or "agencyportal") + "_bench"
        db_url = urlunsplit(parts._replace(path="/" + bench_db))
        ensure_database(db_url)
    else:
        db_url = f"sqlite:///{tempfile.mkdtemp(prefix='bench-')}/bench.sqlite3"
    broker = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    if not broker.startswith("redis"):
        sys.exit("The benchmarks need Redis: set CELERY_BROKER_URL=redis://...")
    var_dir = tempfile.mkdtemp(prefix="bench-var-")
    env = {
        "DJANGO_SETTINGS_MODULE": "agencyportal.settings",
        "DATABASE_URL": db_url,
        "CELERY_BROKER_URL": broker,
        "CELERY_TASK_DEFAULT_QUEUE": f"bench-{os.getpid()}",
        "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "SECRET_KEY": "bench-only-" + "x" * 40,
        "DEBUG": "False",  # as in production: no query log in the workers
        "VAR_DIR": var_dir,
        "LOG_LEVEL": "WARNING",
        "CONN_MAX_AGE": "60",
        "CLOUDFLARE_GLOBAL_RATE": str(args.global_rate),
        "CLOUDFLARE_USER_BUDGET": str(args.user_budget),
        "GRANT_DISPATCH_RETRY": "600",  # the run is shorter: no re-dispatch of queued grants
        "GRANT_SWEEP_MAX_BATCHES": "1000",
    }
    os.environ.update(env)
    return env


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database `url` names if it does not exist yet (SQLite needs nothing)."""
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        return
    import psycopg

    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(env: dict[str, str]) -> None:
    log(f"migrating {env['DATABASE_URL'].rsplit('@', 1)[-1]}")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "--skip-checks", "-v", "0"],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection

    # A clean slate for every run (each run has a new encryption key: never load old rows).
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "TRUNCATE connections_alert, connections_grantevent, connections_grant_accounts, connections_grant, "
                "connections_authorizationrequest, connections_oauthapp, clients_zone, clients_cloudflareaccount CASCADE"
            )


def start_sandbox(*, access_ttl: int):
    from cloudflare_sandbox.testing import SandboxProcess

    sandbox = SandboxProcess(access_ttl=access_ttl).start()
    # The sandbox enforces Cloudflare's per-user limit; the synthetic grants all belong to one
    # sandbox user, so lift it (the portal's own budget is what is measured).
    sandbox.settings(rate_limit=10_000_000, rate_window=300)
    base = sandbox.base_url
    os.environ.update(
        {
            "CLOUDFLARE_AUTHORIZE_URL": f"{base}/oauth2/auth",
            "CLOUDFLARE_TOKEN_URL": f"{base}/oauth2/token",
            "CLOUDFLARE_REVOKE_URL": f"{base}/oauth2/revoke",
            "CLOUDFLARE_API_BASE_URL": f"{base}/client/v4",
            "CLOUDFLARE_ISSUER": sandbox.issuer,
        }
    )
    from django.conf import settings

    settings.CLOUDFLARE_TOKEN_URL = f"{base}/oauth2/token"
    settings.CLOUDFLARE_API_BASE_URL = f"{base}/client/v4"
    return sandbox


class WorkerPool:
    """One `celery worker` (prefork, K processes) in its own process group, with an RSS sampler."""

    def __init__(self, *, concurrency: int, log_path: Path, pool: str = "prefork") -> None:
        self.concurrency = concurrency
        self.pool = pool
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.peak_rss = 0
        self._stop = threading.Event()

    def start(self) -> None:
        queue = os.environ["CELERY_TASK_DEFAULT_QUEUE"]
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    CELERY,
                    "-A",
                    "agencyportal",
                    "worker",
                    "-l",
                    "warning",
                    "-P",
                    self.pool,
                    "-c",
                    str(self.concurrency),
                    "-Q",
                    queue,
                    "-n",
                    f"{queue}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                cwd=ROOT,
                env=os.environ.copy(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # Ready when the pool children exist (the banner is not printed at level warning).
        deadline = time.monotonic() + 60
        children = self.concurrency if self.pool == "prefork" else 0
        while len(_group_pids(self.proc.pid)) < children + 1:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(self.log_path.read_text()[-3000:])
            time.sleep(0.2)
        time.sleep(2)
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            total = sum(_rss(pid) for pid in _group_pids(self.proc.pid))
            self.peak_rss = max(self.peak_rss, total)
            time.sleep(0.5)

    def stop(self) -> None:
        self._stop.set()
        if self.proc is None:
            return
        try:
            # Warm shutdown: SIGTERM to the main process only, which lets the pool finish its tasks.
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=40)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def cpu_seconds(self) -> float:
        """User + system CPU used so far by the worker and its pool processes."""
        return sum(_cpu(pid) for pid in _group_pids(self.proc.pid))


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


class DatabaseCpu:
    """CPU used by the PostgreSQL backends serving one database (sampled: backends come and go)."""

    def __init__(self) -> None:
        self._seen: dict[int, float] = {}
        self._base: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _pids(self) -> list[int]:
        from django.db import connection

        if connection.vendor != "postgresql":
            return []
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return [row[0] for row in cursor.fetchall()]

    def _sample(self) -> None:
        for pid in self._pids():
            self._seen[pid] = _cpu(pid)

    def start(self) -> DatabaseCpu:
        self._sample()
        self._base = dict(self._seen)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        from django.db import connection

        while not self._stop.wait(0.25):
            self._sample()
        connection.close()

    def stop(self) -> float:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return sum(cpu - self._base.get(pid, 0.0) for pid, cpu in self._seen.items())


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of /proc/<pid>/stat: the process group
            pids.append(int(entry.name))
    return pids


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def p95(values: list[float]) -> float:
    if not values:
        return float("nan")
    if len(values) < 20:
        return max(values)
    return statistics.quantiles(values, n=20)[18]


def purge_queue() -> None:
    import redis

    redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).delete(os.environ["CELERY_TASK_DEFAULT_QUEUE"])


def _bare_process(worker, args, out, start) -> None:
    start.wait()  # every process forked and ready: the clock starts for all at once
    out.put(worker(*args))


def run_bare_processes(worker, arg_lists: list[tuple]) -> float:
    """Run `worker(*args)` in one forked process per entry of `arg_lists`, each returning its
    successes; return them per second. The clock starts once every process is up (forking K
    processes is not the calls' time, as the pipeline's timing starts with its workers up)."""
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    start = ctx.Barrier(len(arg_lists) + 1)
    procs = [ctx.Process(target=_bare_process, args=(worker, args, out, start)) for args in arg_lists]
    for proc in procs:
        proc.start()
    start.wait()
    started = time.monotonic()
    ok = sum(out.get() for _ in procs)
    elapsed = time.monotonic() - started
    for proc in procs:
        proc.join()
    return ok / elapsed
