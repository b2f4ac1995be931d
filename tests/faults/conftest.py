"""Fault tests: real `celery worker` processes on PostgreSQL + Redis against the sandbox process.

The workers read the pytest-django *test* database (the data a test commits is what they see, so
these tests use `transactional_db`) and consume a queue of their own, so no other worker on the
machine takes their messages. The test process plays beat: it runs the sweeps itself.

Every worker is started in its own process group and stopped (SIGTERM, then SIGKILL) at teardown,
whatever the test did.
"""

from __future__ import annotations

import os
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

# Engine timings shrunk so a fault heals within seconds (the same values go to the workers).
FAST = {
    "GRANT_REFRESH_LEASE": 8,  # > connect 2 s + read 4 s: the worst HTTP time
    "GRANT_RETRY_BASE": 1,
    "GRANT_RETRY_MAX": 4,
    "GRANT_UNCERTAIN_RETRY": 1,
    "GRANT_DISPATCH_RETRY": 5,
    "GRANT_CLIENT_CONFIG_BACKOFF": 30,
    "GRANT_FAILURE_THRESHOLD": 3,
    "CLOUDFLARE_CONNECT_TIMEOUT": 2.0,
    "CLOUDFLARE_READ_TIMEOUT": 4.0,
    "CLOUDFLARE_RATELIMIT_MAX_WAIT": 2.0,
}


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
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def private_redis(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = PrivateRedis(port=port, directory=tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
