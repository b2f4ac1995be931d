"""Fixtures for the Cloudflare sandbox's own tests.

``sandbox`` is one sandbox process for the whole test session (started like a developer would run
it, with a temporary database and the control endpoint on); ``sandbox_clean`` hands it to a test
with faults, settings, counters and the clock back at their start-up values.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from cloudflare_sandbox.testing import SandboxProcess  # noqa: E402


def _clean(process: SandboxProcess) -> None:
    process.clear_faults()
    process.reset_settings()
    process.reset_counters()
    process.set_clock(0)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxProcess]:
    """A running sandbox shared by the session."""
    with SandboxProcess() as process:
        yield process


@pytest.fixture
def sandbox_clean(sandbox: SandboxProcess) -> Iterator[SandboxProcess]:
    """The shared sandbox with faults off, default settings, zero counters and the real clock."""
    _clean(sandbox)
    yield sandbox
    _clean(sandbox)
