"""LISTEN/NOTIFY: a node wakes the cluster's event loop when it logs a change.

The node holding the events lease polls the change log twice a second; a change logged
by another node would wait up to that long. Each write transaction that adds to the
change log also sends a notification (a trigger on the table, migration postgres_0003;
delivered at commit, once per transaction), and
every node listens on a connection of its own and wakes its event dispatcher.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import URL

log = logging.getLogger(__name__)

#: The channel of migration postgres_0003's trigger.
CHANNEL = "lanthorn_changes"
RECONNECT_SECONDS = 5.0


class ChangeListener:
    """A thread that calls ``wake()`` on each notification; reconnects when the
    connection is lost."""

    def __init__(self, url: URL, wake: Callable[[], None]) -> None:
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._wake = wake
        self._stopping = threading.Event()
        #: A channel of this listener alone, notified by ``stop()`` to end its wait.
        self._stop_channel = f"lanthorn_stop_{uuid.uuid4().hex}"
        #: Set once LISTEN is on (for tests and start-up ordering).
        self.listening = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lanthorn-pg-listen",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._interrupt()
        self._thread.join(timeout=10)

    def _interrupt(self) -> None:
        """End the thread's wait for a notification now, not at its next timeout: a
        server's stop would otherwise take up to half a second longer."""
        if not self.listening.is_set():
            return
        try:
            with psycopg.connect(self._conninfo, autocommit=True) as conn:
                conn.execute(f"NOTIFY {self._stop_channel}")
        except psycopg.Error as exc:
            log.warning("could not interrupt the change listener (%s)", exc)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    conn.execute(f"LISTEN {self._stop_channel}")
                    self.listening.set()
                    while not self._stopping.is_set():
                        for notification in conn.notifies(timeout=0.5, stop_after=1):
                            if notification.channel == CHANNEL:
                                self._wake()
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("listening for changes failed (%s); retrying", exc)
                self._stopping.wait(RECONNECT_SECONDS)
