"""A real worker and one beat start and run the schedule, with the default broker (no server)
and with Redis. Each run uses its own database file and broker, in separate processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent


def _env(tmp_path: Path, broker: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_"))}
    if broker:
        env["CELERY_BROKER_URL"] = broker
    env.update(
        {
            "VAR_DIR": str(tmp_path / "var"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "DEBUG": "True",
            "PYTHONUNBUFFERED": "1",
            # Beat's "Sending due task" and the worker's "succeeded" lines are what this test watches.
            "LOG_VERBOSE": "True",
        }
    )
    return env


def _wait_for(path: Path, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        time.sleep(0.25)
    return False


def _git_status() -> set[str]:
    """Untracked, not ignored paths of the checkout (empty outside a git checkout): what a process
    that writes into the working directory would leave behind."""
    found = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True, text=True
    )
    lines = found.stdout.splitlines() if found.returncode == 0 else []
    return {line for line in lines if line.startswith("??")}


def _run_worker_and_beat(tmp_path: Path, broker: str | None) -> None:
    env = _env(tmp_path, broker)
    status_before = _git_status()
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    celery = [sys.executable, "-m", "celery", "-A", "agencyportal"]
    worker_log, beat_log = tmp_path / "worker.log", tmp_path / "beat.log"
    procs = []
    try:
        with worker_log.open("w") as wl, beat_log.open("w") as bl:
            procs.append(
                subprocess.Popen(
                    [*celery, "worker", "--loglevel", "info", "--pool", "solo", "--without-mingle", "--without-gossip"],
                    cwd=ROOT,
                    env=env,
                    stdout=wl,
                    stderr=subprocess.STDOUT,
                )
            )
            procs.append(
                subprocess.Popen(
                    [*celery, "beat", "--loglevel", "info", "--schedule", str(tmp_path / "beat-schedule")],
                    cwd=ROOT,
                    env=env,
                    stdout=bl,
                    stderr=subprocess.STDOUT,
                )
            )
            assert _wait_for(worker_log, "ready", 60), worker_log.read_text()
            # The sweeps run on minute boundaries (crontab "*"): wait for the next one, then for the worker.
            assert _wait_for(beat_log, "Sending due task", 75), beat_log.read_text()
            assert _wait_for(worker_log, "succeeded", 60), worker_log.read_text()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert "Traceback" not in worker_log.read_text()
    # Nothing for the person running it to wonder about (kombu's "No hostname was supplied", say).
    for log in (worker_log, beat_log):
        assert "kombu" not in log.read_text(), log.read_text()
    # Running the processes writes nothing into the checkout (broker folders, schedules, logs: all in var/).
    assert _git_status() - status_before == set()


def test_it_runs_a_worker_and_beat_on_the_default_broker(tmp_path):
    _run_worker_and_beat(tmp_path, None)  # CELERY_BROKER_URL unset: the development default


@pytest.mark.redis
def test_it_runs_a_worker_and_beat_on_redis(tmp_path):
    # A database index of its own, so nothing else's queue is touched.
    base = settings.CELERY_BROKER_URL.rsplit("/", 1)[0]
    _run_worker_and_beat(tmp_path, f"{base}/14")
