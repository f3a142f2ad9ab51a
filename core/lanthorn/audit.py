"""The audit log: who did what to which resource, when, and how it ended.

Entries come from the REST middleware (``lanthorn.rest.audit``) and the DICOM listener,
one per request or DIMSE operation. They are queued in memory and written by a
background thread in batches (one transaction each), so neither a request nor the
ingest path waits for the index. The holder of the "events" lease forgets entries
older than ``AuditLogRetentionDays``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from .dimse.request import origin_of
from .index.audit import AuditEntry

if TYPE_CHECKING:
    from pynetdicom.events import Event

    from .server import Server

log = logging.getLogger(__name__)

#: How often queued entries are written, and how many wake the writer at once.
FLUSH_SECONDS = 1.0
BATCH = 500
#: How often the lease holder purges expired entries.
PURGE_SECONDS = 3600.0
DAY = 86400.0
#: Statuses of the DIMSE operations (PS3.4 C.4): pending, and a handler's failure.
PENDING = 0xFF00
SUCCESS = 0x0000
MOVE_DESTINATION_UNKNOWN = 0xA801
PROCESSING_FAILURE = 0x0110


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


# -- the DICOM side ---------------------------------------------------------------------


def dimse_entry(event: Event, action: str, status: int | None, level: str | None = None,
                resource: str | None = None, **details: Any) -> AuditEntry:
    """What the peer of ``event``'s association did, named by its AET."""
    origin = origin_of(event)
    return AuditEntry(time.time(), origin.remote_aet, "dicom", origin.remote_ip, action, level,
                      resource, status, {"CalledAet": origin.called_aet, **details})


Handler = Callable[..., Iterator[Any]]


def audited(action: str, handler: Handler) -> Handler:
    """A C-FIND/C-MOVE/C-GET handler that also records one entry per request: the
    identifier's keys, the move destination, the number of sub-operations and the
    status the handler reached (pynetdicom reports sub-operation failures to the peer)."""

    def serve(event: Event, server: Server, *args: Any) -> Iterator[Any]:
        outcome: dict[str, Any] = {"status": SUCCESS}
        try:
            for item in handler(event, server, *args):
                _note(outcome, item)
                yield item
        except Exception:
            outcome["status"] = PROCESSING_FAILURE
            raise
        finally:
            server.audit.record(dimse_entry(event, action, outcome.pop("status"),
                                            Query=_query(event), **outcome))

    return serve


def _note(outcome: dict[str, Any], item: Any) -> None:
    """Follow pynetdicom's generator contract: the destination (None: unknown), the
    number of sub-operations, then (status, dataset) pairs."""
    if isinstance(item, int):
        outcome["SubOperations"] = item
    elif isinstance(item, tuple) and item and item[0] is None:
        outcome["status"] = MOVE_DESTINATION_UNKNOWN
    elif isinstance(item, tuple) and isinstance(item[0], int) and item[0] != PENDING:
        outcome["status"] = item[0]


def _query(event: Event) -> dict[str, str]:
    """The identifier's elements that have a value, by keyword (or tag), as text."""
    try:
        identifier: Dataset = event.identifier
        move_destination = getattr(event, "move_destination", None)
        found = {element.keyword or str(element.tag): str(element.value)
                 for element in identifier if element.value not in (None, "", b"")
                 and element.VR != "SQ"}
    except Exception:  # an undecodable identifier: its failure status says enough
        return {}
    if move_destination:
        found["MoveDestination"] = str(move_destination).strip()
    return found
