"""The listener's associations without pynetdicom's polling delays (pynetdicom 3.0.4).

pynetdicom runs two polling loops per association: its DUL thread checks the socket,
then sleeps 1 ms when there was nothing to read; the association thread sleeps 1 ms,
then looks for a received DIMSE message to serve. A C-STORE thus waits for the DUL's
next poll to be read, for the association's next poll to be served, and the association
thread cannot take the next request until 1 ms after it answered: about 2 ms per
instance that no CPU spends, a ceiling of ~400 C-STOREs/s per association.

The listener's associations change three things, all here:

- the DUL thread waits for the socket (``select`` with pynetdicom's 1 ms as a timeout)
  instead of sleeping, so a PDU is read as soon as it arrives; an idle association
  wakes as often as before, so outgoing messages queued by other threads (C-FIND
  answers, an A-RELEASE response) are still sent within 1 ms;
- a complete C-STORE request is served at once, on the DUL thread that decoded it, and
  its response is sent by that thread right after: no hand-over to the association
  thread and back. Other requests (C-FIND, C-MOVE, C-GET, C-ECHO...) go through
  pynetdicom's queue and its association thread as before;
- a PDU is read from the socket with as few system calls as the kernel allows, not in
  4 KB pieces.

And pynetdicom's own log handlers, which format every PDU and DIMSE message whether or
not their lines are shown, are only bound when its logger shows INFO lines
(``lanthorn serve --verbose``), for every association of the process.

Remove this module when pynetdicom's reactors become event-driven.
"""

from __future__ import annotations

import logging
import queue
import select
import ssl
import time
from typing import TYPE_CHECKING, Any

from pynetdicom import _config
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class
from pynetdicom.transport import AssociationSocket, RequestHandler

if TYPE_CHECKING:
    from pynetdicom.association import Association

#: pynetdicom's poll period (``DULServiceProvider._run_loop_delay``), now a select timeout.
POLL = 0.001


def log_dimse_messages_when_shown() -> None:
    """pynetdicom's standard log handlers (``_config.LOG_HANDLER_LEVEL``, its documented
    switch) only when its logger shows their lines: formatting them took about 5 % of a
    C-STORE's CPU. Applies to the associations created from now on."""
    shown = logging.getLogger("pynetdicom").isEnabledFor(logging.INFO)
    _config.LOG_HANDLER_LEVEL = "standard" if shown else "none"


class ListenerSocket(AssociationSocket):
    """The socket of an association the listener accepted."""

    @property
    def ready(self) -> bool:
        """Whether data can be read, after waiting up to POLL for it to arrive.

        The DUL thread calls this in each turn of its loop; waiting here rather than in
        its ``time.sleep`` lets it read a PDU the moment it arrives.
        """
        sock = self.socket
        if sock is None or not self._is_connected:
            time.sleep(POLL)  # closed: nothing to wait for, but the loop must not spin
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True  # decrypted bytes that select cannot see
        try:
            readable, _, _ = select.select([sock], [], [], POLL)
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # transport connection closed, as pynetdicom
            return False
        return bool(readable)

    def recv(self, nr_bytes: int) -> bytearray:
        """``nr_bytes`` bytes (fewer if the peer closed the connection), read straight
        into one buffer instead of pynetdicom's 4 KB reads appended one by one."""
        assert self.socket is not None, "only read while connected"
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        done = 0
        while done < nr_bytes:
            count = self.socket.recv_into(view[done:])
            if not count:
                del buffer[done:]
                break
            done += count
        return buffer


class ServeStoreOnArrival(queue.Queue):  # type: ignore[type-arg]  # pynetdicom's item type
    """The DIMSE message queue of a listener association, serving C-STORE requests at once.

    pynetdicom's DIMSE provider puts each complete message here, from the DUL thread;
    a C-STORE request is served right there (``Association._serve_request``, as pynetdicom
    itself does for N-EVENT-REPORT requests) unless messages are already waiting, which
    keeps them in order. Only a request the storage service will answer is: one on an
    unknown context or of another service makes pynetdicom abort the association, which
    waits for the DUL thread and must not run on it. The network idle timer does not run
    while the instance is ingested: ``DicomScpTimeout`` is about a silent peer, not a
    slow commit.
    """

    def __init__(self, association: Association) -> None:
        super().__init__()
        self.association = association

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        context_id, message = item
        if not (self._is_storage_request(message, context_id) and self.empty()):
            super().put(item, block, timeout)
            return
        idle_timer = self.association.dul._idle_timer
        idle_timer.stop()
        try:
            self.association._serve_request(message, context_id)
        finally:
            idle_timer.restart()

    def _is_storage_request(self, message: object, context_id: int) -> bool:
        return (isinstance(message, C_STORE) and message.is_valid_request
                and context_id in self.association._accepted_cx
                and uid_to_service_class(message.AffectedSOPClassUID) is StorageServiceClass)


class ListenerRequestHandler(RequestHandler):
    """pynetdicom's request handler, giving each association the behaviour above."""

    def _create_association(self) -> Association:
        association = super()._create_association()
        # pynetdicom builds the AssociationSocket itself: give it ListenerSocket's methods
        # (a subclass without state of its own).
        association.dul.socket.__class__ = ListenerSocket
        association.dul._run_loop_delay = 0  # ListenerSocket.ready waits instead
        association.dimse.msg_queue = ServeStoreOnArrival(association)
        return association
