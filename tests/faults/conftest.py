"""Fault tests: real `celery worker` processes on PostgreSQL + Redis against the sandbox process.

The workers read the pytest-django *test* database (the data a test commits is what they see, so
these tests use `transactional_db`) and consume a queue of their own, so no other worker on the
machine takes their messages. The test process plays beat: it runs the sweeps itself.

Every worker is started in its own process group and stopped (SIGTERM, then SIGKILL) at teardown,
whatever the test did.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection

from connections import ratelimit
from tests.conftest import TEST_KEYS

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))

# Engine timings shrunk so a fault heals within seconds (the same values go to the workers). Each
# keeps its production ratio to the others: lease < outage, settle > the sandbox's slowest answer.
FAST = {
    "GRANT_REFRESH_LEASE": 6,  # at least the whole token call + margin (2 + 6 + 1 = 9 s); heartbeat every 3 s
    "GRANT_LEASE_MARGIN": 1,
    "GRANT_RETRY_BASE": 1,
    "GRANT_RETRY_MAX": 4,
    "GRANT_UNCERTAIN_RETRY": 1,
    "GRANT_UNCERTAIN_SETTLE": 3,  # > the longest injected token latency after a give-up
    "GRANT_DISPATCH_RETRY": 5,
    "GRANT_CLIENT_CONFIG_BACKOFF": 30,
    "GRANT_FAILURE_THRESHOLD": 3,
    "GRANT_WRITE_RETRY_SECONDS": 3,
    "GRANT_INCIDENT_HOLD": 4,
    "GRANT_SWEEP_FOLLOWUP_MIN": 1,
    # Batches as in production, small enough that a test's few grants make several of them.
    "GRANT_REFRESH_BATCH": 3,
    "GRANT_CHECK_BATCH": 3,
    "CLOUDFLARE_CONNECT_TIMEOUT": 2.0,
    "CLOUDFLARE_READ_TIMEOUT": 4.0,
    "CLOUDFLARE_TOKEN_READ_TIMEOUT": 6.0,
    "CLOUDFLARE_RATELIMIT_MAX_WAIT": 2.0,
    "CELERY_TASK_SOFT_TIME_LIMIT": 30,
    "CELERY_TASK_TIME_LIMIT": 40,
}


# --- Shared servers are never stopped --------------------------------------------------------------
# The machine's PostgreSQL and Redis (the URLs this run was started with) serve other jobs too. A
# test may stop only a server it started itself, on a port of its own: every stop goes through
# `refuse_to_stop_shared`, and tests/faults/test_fault_isolation.py checks the rest.


def _host_port(url: str, default_port: int) -> tuple[str, int] | None:
    from urllib.parse import urlsplit

    if not url or "://" not in url:
        return None
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    host = "127.0.0.1" if parts.hostname in ("localhost", "::1") else parts.hostname
    return host, parts.port or default_port


SHARED_SERVERS = {
    addr
    for addr in (
        _host_port(os.environ.get("DATABASE_URL", ""), 5432),
        _host_port(os.environ.get("CELERY_BROKER_URL", ""), 6379),
        _host_port(os.environ.get("CACHE_URL", ""), 6379),
        _host_port(os.environ.get("CLOUDFLARE_RATELIMIT_REDIS_URL", ""), 6379),
    )
    if addr is not None
} | {("127.0.0.1", 5432), ("127.0.0.1", 6379)}


class SharedServerError(AssertionError):
    pass


def refuse_to_stop_shared(host: str, port: int) -> None:
    """Raise unless (host, port) is a server this run did not inherit (i.e. one a test started)."""
    host = "127.0.0.1" if host in ("localhost", "::1") else host
    if (host, int(port)) in SHARED_SERVERS:
        raise SharedServerError(f"refusing to stop the shared server at {host}:{port}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _shared_servers_still_answer():
    """After every fault test, the shared servers that answered before still answer."""
    before = {addr for addr in SHARED_SERVERS if _answers(*addr)}
    yield
    gone = {addr for addr in before if not _answers(*addr)}
    assert not gone, f"a fault test stopped a shared server: {sorted(gone)}"


def _database_url() -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class Workers:
    """`celery worker` processes started by a test, all consuming one private queue."""

    def __init__(self, *, queue: str, env: dict[str, str], log_dir: Path) -> None:
        self.queue = queue
        self.env = env
        self.log_dir = log_dir
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self, *, concurrency: int = 4, pool: str = "prefork", wait: bool = True) -> subprocess.Popen:
        n = len(self.procs)
        log = self.log_dir / f"worker-{n}.log"
        args = [
            CELERY,
            "-A",
            "agencyportal",
            "worker",
            "-l",
            "info",
            "-P",
            pool,
            "-c",
            str(concurrency),
            "-Q",
            self.queue,
            "-n",
            f"{self.queue}-{n}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                args, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append((proc, log))
        if wait:
            self._wait_ready(proc, log)
        return proc

    def _wait_ready(self, proc: subprocess.Popen, log: Path, timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if " ready." in log.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready in {timeout}s:\n{log.read_text()[-3000:]}")

    def start_beat(self) -> subprocess.Popen:
        """A `celery beat` process (sweeping every GRANT_SWEEP_INTERVAL s), stopped like the workers."""
        n = len(self.procs)
        log = self.log_dir / f"beat-{n}.log"
        args = [CELERY, "-A", "agencyportal", "beat", "-l", "info", "-s", str(self.log_dir / f"beat-{n}"), "--pidfile="]
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                args, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append((proc, log))
        return proc

    @staticmethod
    def children(proc: subprocess.Popen) -> list[int]:
        """The pool processes of a prefork worker (its direct children, from /proc/<pid>/stat)."""
        found: list[int] = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == proc.pid:  # the parent pid, after the state field
                found.append(int(stat.parent.name))
        return found

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Signal the worker and its pool children (its own process group)."""
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        deadline = time.monotonic() + 15
        for proc, _ in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # Pool children may outlive a parent that died: clear the whole group.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def log_text(self) -> str:
        return "\n".join(log.read_text(errors="replace") for _, log in self.procs if log.exists())

    def outcomes(self, kind: str = "refresh") -> dict[str, int]:
        counts: dict[str, int] = {}
        marker = f"grant {kind}: "
        for line in self.log_text().splitlines():
            if marker in line and "outcome=" in line:
                outcome = line.rsplit("outcome=", 1)[1].strip()
                counts[outcome] = counts.get(outcome, 0) + 1
        return counts


@pytest.fixture
def engine_settings(settings):
    for name, value in FAST.items():
        setattr(settings, name, value)
    settings.STAFF_ALERT_EMAILS = []
    settings.ALERT_WEBHOOK_URL = ""
    return settings


@pytest.fixture
def workers(transactional_db, cf_sandbox, engine_settings, tmp_path) -> Workers:
    """Factory for worker processes bound to this test's database, queue and sandbox."""
    from agencyportal.celery import app as celery_app

    queue = f"faults-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    base = cf_sandbox.base_url
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "agencyportal.settings",
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": engine_settings.CELERY_BROKER_URL,
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "TOKEN_ENCRYPTION_KEYS": ",".join(TEST_KEYS),
        "SECRET_KEY": "fault-tests-only-" + "x" * 40,
        "DEBUG": "True",
        "VAR_DIR": str(tmp_path / "var"),
        "CLOUDFLARE_AUTHORIZE_URL": f"{base}/oauth2/auth",
        "CLOUDFLARE_TOKEN_URL": f"{base}/oauth2/token",
        "CLOUDFLARE_REVOKE_URL": f"{base}/oauth2/revoke",
        "CLOUDFLARE_API_BASE_URL": f"{base}/client/v4",
        "CLOUDFLARE_ISSUER": cf_sandbox.issuer,
        "LOG_LEVEL": "INFO",
        "LOG_VERBOSE": "True",  # every task line in the worker logs the tests read
        "PYTHONUNBUFFERED": "1",
        **{name: str(value) for name, value in FAST.items()},
    }
    previous_queue = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = queue
    ratelimit.reset()
    pool = Workers(queue=queue, env=env, log_dir=tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()
        celery_app.conf.task_default_queue = previous_queue
        _purge_queue(engine_settings.CELERY_BROKER_URL, queue)
        cf_sandbox.clear_faults()
        cf_sandbox.reset_settings()


def _purge_queue(url: str, queue: str) -> None:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2)
        client.delete(queue)
    except Exception:
        pass


def wait_until(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.5, tick: Callable | None = None):
    """Poll `predicate` (running `tick`, e.g. a sweep, between polls) until true or the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if tick is not None:
            tick()
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


class PrivateRedis:
    """A redis-server of the test's own, on a free port: the only Redis a test may stop or restart."""

    def __init__(self, *, port: int, directory: Path) -> None:
        refuse_to_stop_shared("127.0.0.1", port)  # a port of its own, or nothing
        self.port = port
        self.directory = directory
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen | None = None

    def ping(self) -> bool:
        found = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True)
        return found.stdout.strip() == "PONG"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [*args, "--dir", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        assert wait_until(self.ping, timeout=20, interval=0.1), "the test's own Redis did not start"

    def stop(self) -> None:
        """Stop it hard (SIGKILL, nothing saved): queued messages are lost, as in a crash."""
        refuse_to_stop_shared("127.0.0.1", self.port)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(port=_free_port(), directory=tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _pg_bin(name: str) -> str:
    import glob

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or name]
    return found[-1]


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own (initdb in a temporary directory, a free port).

    The only PostgreSQL a test may stop. PostgreSQL refuses to run as root: then the cluster runs as
    the `postgres` system user, in a directory that user owns.
    """

    def __init__(self, *, directory: Path) -> None:
        self.port = _free_port()
        refuse_to_stop_shared("127.0.0.1", self.port)
        self.directory = directory
        self.data = directory / "pgdata"
        self.log = directory / "postgres.log"
        self.run_as = "postgres" if os.geteuid() == 0 else None

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = list(args)
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, cwd="/")

    def init(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.run_as:
            shutil.chown(self.directory, user=self.run_as)
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        # Small and fast: nothing here needs durability beyond the test.
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.directory}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 32MB\n"
                "max_connections = 60\n"
            )

    def start(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "start")

    def stop(self) -> None:
        """Stop it at once (`-m immediate`: connections die, as in a crash or a failover)."""
        refuse_to_stop_shared("127.0.0.1", self.port)
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)

    def url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def psql(self, sql: str, database: str = "postgres") -> None:
        subprocess.run(
            [
                _pg_bin("psql"),
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )


@pytest.fixture
def private_database(transactional_db, workers):
    """This test's process and its workers use a PostgreSQL of the test's own (same schema).

    The only database a test may stop. The test process's connection is pointed at it for the
    test's duration and back afterwards (pytest-django then flushes the shared test database).
    """
    import tempfile

    from django.db import connection

    directory = Path(tempfile.mkdtemp(prefix="ap-pg-"))  # short: the socket path has a length limit
    server = PrivatePostgres(directory=directory)
    server.init()
    server.start()
    saved = dict(connection.settings_dict)
    try:
        server.psql("CREATE DATABASE faults")
        schema = subprocess.run(
            [
                _pg_bin("pg_dump"),
                "--schema-only",
                "--no-owner",
                "--no-privileges",
                "-h",
                saved["HOST"] or "127.0.0.1",
                "-p",
                str(saved["PORT"] or 5432),
                "-U",
                saved["USER"],
                saved["NAME"],
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PGPASSWORD": saved.get("PASSWORD") or ""},
        ).stdout
        subprocess.run(
            [
                _pg_bin("psql"),
                "-q",
                "-v",
                "ON_ERROR_STOP=0",
                "-h",
                "127.0.0.1",
                "-p",
                str(server.port),
                "-U",
                "postgres",
                "-d",
                "faults",
            ],
            input=schema,
            capture_output=True,
            text=True,
            check=True,
        )
        connection.close()
        connection.settings_dict.update(
            HOST="127.0.0.1", PORT=str(server.port), NAME="faults", USER="postgres", PASSWORD=""
        )
        workers.env["DATABASE_URL"] = server.url("faults")
        yield server
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
