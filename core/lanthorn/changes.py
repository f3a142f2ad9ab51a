"""Events from the change log: ``on_change`` delivery and stable-resource detection.

The change log in the index *is* the event queue. One process of the cluster (the
holder of the "events" lease) marks quiet resources stable and feeds every
``on_change`` implementation from its own cursor, saved in the index: delivery is in
order, at least once, survives restarts, and happens once per cluster. A consumer
that raises is retried later without holding the others back.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from .index.records import Change
from .lease import Lease

if TYPE_CHECKING:
    from pluggy import HookImpl

    from .server import Server

log = logging.getLogger(__name__)

LEASE = "events"
LEASE_SECONDS = 15.0
POLL_SECONDS = 0.5
BATCH = 200


class EventDispatcher:
    """A background thread; ``wake()`` makes it look at the log right away."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lease = Lease(server.index, LEASE, server.identity, LEASE_SECONDS)
        self._thread = threading.Thread(target=self._run, name="lanthorn-events", daemon=True)

    def start(self) -> None:
        # Cursors first: an instance stored before the thread's first round is not missed.
        for impl in self.server.plugins.hook.on_change.get_hookimpls():
            self._cursor(_cursor_name(impl))
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self._lease.release()

    def _run(self) -> None:
        stable_checked = float("-inf")
        while not self._stopping.is_set():
            try:
                if self._lease.held():
                    # Woken by each new change, a round delivers it; stability is a
                    # matter of seconds, looked for at most every POLL_SECONDS.
                    now = time.monotonic()
                    due = now - stable_checked >= POLL_SECONDS
                    if due:
                        stable_checked = now
                    self.run_once(look_for_stable=due)
            except Exception:
                log.exception("the event loop failed; retrying")
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()

    def run_once(self, look_for_stable: bool = True) -> None:
        """One round: resources become stable (when ``look_for_stable``), then every
        consumer up to the end of the log (and, now and then, the audit log's expired
        entries)."""
        if look_for_stable:
            stable_age = float(self.server.config["StableAge"])
            self.server.index.mark_stable(time.time() - stable_age)
            self.server.audit.purge_expired()
        for impl in self.server.plugins.hook.on_change.get_hookimpls():
            self._feed(impl)

    def _cursor(self, name: str) -> int:
        """A consumer's saved position; a new consumer starts at the present, not at the
        dawn of time."""
        index = self.server.index
        cursor = index.cursor(name)
        if cursor is None:
            last = index.last_change()
            cursor = last.seq if last else 0
            index.set_cursor(name, cursor)
        return cursor

    def _feed(self, impl: HookImpl) -> None:
        index = self.server.index
        name = _cursor_name(impl)
        cursor = self._cursor(name)
        while not self._stopping.is_set():
            batch = index.changes(since=cursor, limit=BATCH)
            for change in batch:
                if not self._deliver(impl, change):
                    index.set_cursor(name, cursor)
                    return
                cursor = change.seq
            if batch:
                index.set_cursor(name, cursor)
            if len(batch) < BATCH:
                return

    def _deliver(self, impl: HookImpl, change: Change) -> bool:
        try:
            arguments = {"server": self.server, "change": change}
            impl.function(**{k: arguments[k] for k in impl.argnames})
        except Exception:
            log.exception('plugin "%s" failed on change %d; it will get it again',
                          impl.plugin_name, change.seq)
            return False
        return True


def _cursor_name(impl: HookImpl) -> str:
    return f"on_change:{impl.plugin_name}"
