"""Thread pools that a process's requests share, made when first used.

Made lazily, in the process that uses them: the threads of a pool made before a fork do
not exist in the child, where the pool would take work and never run it; so a forked
worker forgets its parent's pools and makes its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class SharedPool:
    def __init__(self, threads: int, name: str) -> None:
        self.threads, self.name = threads, name
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    def submit(self, work: Callable[..., T], /, *args: object) -> Future[T]:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=self.name)
            return self._pool.submit(work, *args)

    def _forget(self) -> None:
        self._pool, self._lock = None, threading.Lock()
