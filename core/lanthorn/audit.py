"""The audit log: who did what to which resource, when, and how it ended.

Entries come from the REST middleware (``lanthorn.rest.audit``) and the DICOM listener
(``lanthorn.dimse.audit``), one per request or DIMSE operation. They are queued in
memory and written by a background thread in batches (one transaction each), so neither
a request nor the ingest path waits for the index. The holder of the "events" lease forgets entries
older than ``AuditLogRetentionDays``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from .index.audit import AuditEntry

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger(__name__)

#: How often queued entries are written, and how many wake the writer at once.
FLUSH_SECONDS = 1.0
BATCH = 500
#: How often the lease holder purges expired entries.
PURGE_SECONDS = 3600.0
DAY = 86400.0


class AuditLog:
    """Queues entries and writes them in batches; one per server process."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.enabled = bool(server.config["AuditLogEnabled"])
        self.retention = float(server.config["AuditLogRetentionDays"]) * DAY
        self._queue: deque[AuditEntry] = deque()
        self._flushing = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = threading.Lock()
        self._last_purge = 0.0

    def record(self, entry: AuditEntry) -> None:
        if not self.enabled:
            return
        self._queue.append(entry)
        if self._thread is None and not self._stopping.is_set():
            self._start()
        if len(self._queue) >= BATCH:
            self._wake.set()

    def _start(self) -> None:
        with self._started:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lanthorn-audit",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write every queued entry now (the admin route reads its own process's too).

        A failed write is logged and its entries dropped: the audit log must never stop
        the server."""
        with self._flushing:
            batch = [self._queue.popleft() for _ in range(len(self._queue))]
            if not batch:
                return
            try:
                self.server.index.audit.add(batch)
            except Exception:
                log.exception("%d audit log entries could not be written", len(batch))

    def close(self) -> None:
        """Stop the writer after a last flush (before the index closes)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()

    def purge_expired(self) -> None:
        """Called by the holder of the "events" lease; acts at most once an hour."""
        now = time.time()
        if not self.retention or now - self._last_purge < PURGE_SECONDS:
            return
        self._last_purge = now
        purged = self.server.index.audit.purge(now - self.retention)
        if purged:
            log.info("audit log: %d entries older than %d days forgotten", purged,
                     self.retention // DAY)
