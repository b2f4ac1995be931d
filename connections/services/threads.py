"""Thread pools of a worker process, one per kind of outbound call."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings


class ProcessThreads:
    """The threads of this worker process for one kind of call, sized by a setting.

    Created on first use (after the fork) and kept across tasks, so each thread keeps its HTTP
    session (and, for health checks, its database connection). `exact`: exactly the setting's
    number of threads (a new pool when it changes, as in tests), so no more calls than that are
    ever in flight; otherwise the pool only grows.
    """

    def __init__(self, *, setting: str, name: str, exact: bool) -> None:
        self._setting = setting
        self._name = name
        self._exact = exact
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self.size = 0

    def get(self) -> ThreadPoolExecutor:
        size = max(1, int(getattr(settings, self._setting)))
        with self._lock:
            if self._executor is None or size > self.size or (self._exact and size != self.size):
                if self._executor is not None:
                    self._executor.shutdown(wait=False)  # its threads end once idle
                self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix=self._name)
                self.size = size
            return self._executor
