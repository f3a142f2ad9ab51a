"""Group commit: concurrent requests share one write transaction and one durable commit.

A durable commit (SQLite's WAL fsync, PostgreSQL's WAL flush) costs about as much as all
the statements of an ingest, and writers queue for the one write lock anyway. So the
first caller to find no batch running leads: it takes every request queued so far, runs
them in one transaction, and hands each caller its own result. Callers that queued while
a batch ran wait, then one of them leads the next batch. No thread of its own, nothing to
start or stop, and nobody's answer comes before the commit that makes it durable.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

Request = TypeVar("Request")
Result = TypeVar("Result")


class _Waiter(Generic[Request, Result]):
    __slots__ = ("done", "outcome", "request")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.outcome: Result | BaseException | None = None
        self.done = False


class GroupCommit(Generic[Request, Result]):
    """Run ``batch`` (requests in, one result or exception per request out) for callers
    of ``submit``, several callers' requests at a time."""

    def __init__(self, batch: Callable[[list[Request]], list[Result | Exception]]) -> None:
        self._batch = batch
        self._changed = threading.Condition()
        self._queue: list[_Waiter[Request, Result]] = []
        self._leading = False

    def submit(self, request: Request) -> Result:
        waiter: _Waiter[Request, Result] = _Waiter(request)
        with self._changed:
            self._queue.append(waiter)
            while self._leading and not waiter.done:
                self._changed.wait()
            if not waiter.done:
                self._leading = True
                taken, self._queue = self._queue, []
        if not waiter.done:
            self._lead(taken)
        if isinstance(waiter.outcome, BaseException):
            raise waiter.outcome
        return waiter.outcome  # type: ignore[return-value]  # done: a Result

    def _lead(self, taken: list[_Waiter[Request, Result]]) -> None:
        try:
            outcomes: list[Result | BaseException] = list(self._batch([w.request for w in taken]))
        except BaseException as exc:  # noqa: BLE001 - each caller re-raises it
            outcomes = [exc] * len(taken)
        with self._changed:
            for waiter, outcome in zip(taken, outcomes, strict=True):
                waiter.outcome, waiter.done = outcome, True
            self._leading = False
            self._changed.notify_all()
