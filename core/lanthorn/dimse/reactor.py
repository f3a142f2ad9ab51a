"""The listener's associations without pynetdicom's polling delays and, for C-STORE,
without its per-message machinery (pynetdicom 3.0.4).

pynetdicom runs two polling loops per association: its DUL thread checks the socket,
then sleeps 1 ms when there was nothing to read; the association thread sleeps 1 ms,
then looks for a received DIMSE message to serve. A C-STORE thus waits for the DUL's
next poll to be read, for the association's next poll to be served, and the association
thread cannot take the next request until 1 ms after it answered: about 2 ms per
instance that no CPU spends, a ceiling of ~400 C-STOREs/s per association.

The listener's associations change these things, all here:

- the DUL thread waits for the socket (``select``) instead of sleeping, so a PDU is read
  as soon as it arrives, and its loop has no pause between turns; other threads that
  queue something for it to send ring its doorbell, which it waits for too; and the
  association thread waits on its message queue, which the DUL thread's items for it
  (messages, a release, an abort) wake. An idle association no longer wakes 2,000 times
  a second (4 % of a core each);
- a C-STORE request is taken from the PDUs as they are read (``StoreArrivals``), served
  on the DUL thread as soon as its data set is complete, and answered at once: no
  hand-over to the association thread and back, and none of pynetdicom's decoding of
  the command set into a Dataset and a primitive and back (a third of the CPU of a
  small instance; ``commands.py``). Other requests (C-FIND, C-MOVE, C-GET, C-ECHO...)
  go through pynetdicom's queue and its association thread as before;
- a C-FIND response is encoded with the same codec (``ListenerDIMSE``) and written by
  the association thread that answers, under the socket's lock, rather than queued for
  the DUL thread (which woke up for every answer and contended for the GIL with it);
- a PDU is read from the socket with as few system calls as the kernel allows, not in
  4 KB pieces.

And pynetdicom's own log handlers, which format every PDU and DIMSE message whether or
not their lines are shown, are only bound when its logger shows INFO lines
(``lanthorn serve --verbose``), for every association of the process.

Remove this module when pynetdicom's reactors become event-driven.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from pynetdicom import _config, evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import TRANSITION_TABLE
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import A_ABORT, A_P_ABORT, P_DATA
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target

from .commands import (
    C_FIND_RSP,
    COMMAND_BIT,
    LAST_BIT,
    P_DATA_TF,
    PDU_HEADER_LENGTH,
    PDU_TYPES,
    CommandError,
    StoreCommand,
    message_pdus,
    p_data_tf,
    presentation_values,
    read_pdu_header,
    read_store_command,
    response_command,
    store_response,
)
from .request import StoreAnswer, StoreRequest

if TYPE_CHECKING:
    from pynetdicom.association import Association

log = logging.getLogger(__name__)

#: pynetdicom's poll period (``DULServiceProvider._run_loop_delay``).
POLL = 0.001
#: How long an idle association's threads wait for something to do before they look at
#: their timers (ARTIM, ``DicomScpTimeout``) and whether they were stopped.
IDLE_WAIT = 0.05
#: What pynetdicom answers a C-STORE whose handler raised (its "unable to process").
UNABLE_TO_PROCESS = 0xC211
#: The state machine's event for an A-ABORT request from the local user (PS3.8 9.2).
ABORT_REQUESTED = "Evt15"


class ListenerServer(ThreadedAssociationServer):
    """pynetdicom's association server, knowing how the listener serves a C-STORE."""

    serve_store: Callable[[StoreRequest], StoreAnswer]


def log_dimse_messages_when_shown() -> None:
    """pynetdicom's standard log handlers (``_config.LOG_HANDLER_LEVEL``, its documented
    switch) and its printing of query identifiers only when its logger shows their
    lines: formatting them took about 5 % of a C-STORE's CPU, and decoding and printing
    every C-FIND request and answer 7 % of a C-FIND's. Applies to the associations
    created from now on."""
    logger = logging.getLogger("pynetdicom")
    shown = logger.isEnabledFor(logging.INFO)
    _config.LOG_HANDLER_LEVEL = "standard" if shown else "none"
    _config.LOG_REQUEST_IDENTIFIERS = shown  # logged at INFO, answers at DEBUG
    _config.LOG_RESPONSE_IDENTIFIERS = logger.isEnabledFor(logging.DEBUG)


class Doorbell:
    """Wakes an association's DUL thread from its wait on the socket when another thread
    queues something for it to send (a socket pair, as select needs a file)."""

    def __init__(self) -> None:
        self._inside, self._outside = socket.socketpair()
        for end in (self._inside, self._outside):
            end.setblocking(False)
        # Closed with the connection (ListenerSocket._shutdown_socket); should an
        # association ever be dropped without that, when it is collected.
        self.close = weakref.finalize(self, _close_all, self._inside, self._outside)

    def fileno(self) -> int:
        return self._inside.fileno()

    def ring(self) -> None:
        with contextlib.suppress(OSError):  # full: it rings already; closed: no one hears
            self._outside.send(b"\0")

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._inside.recv(4096):
                pass


def _close_all(*sockets: socket.socket) -> None:
    for end in sockets:
        end.close()


class Ringing(queue.Queue):  # type: ignore[type-arg]  # pynetdicom's item types
    """One of pynetdicom's queues between an association's threads, calling ``wake``
    after each item put, so that the thread that takes them need not poll."""

    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__()
        self.wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self.wake()


class ListenerSocket(AssociationSocket):
    """The socket of an association the listener accepted."""

    doorbell: Doorbell  # set by ListenerRequestHandler
    #: Held while a PDU is written: the DUL thread and the association thread (C-FIND
    #: responses, ListenerDIMSE) both write, and PDUs must not interleave.
    sending: threading.Lock  # set by ListenerRequestHandler

    @property
    def ready(self) -> bool:
        """Whether data can be read, after waiting for it to arrive, for the doorbell
        (something to send) or for IDLE_WAIT, whichever comes first.

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
            readable, _, _ = select.select([sock, self.doorbell], [], [], IDLE_WAIT)
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # transport connection closed, as pynetdicom
            return False
        if self.doorbell in readable:
            self.doorbell.clear()  # the loop looks at what was queued before it reads
        return sock in readable

    def _shutdown_socket(self) -> None:
        """Close the connection (pynetdicom's ``close`` and its state machine's aborts
        both come here), and the doorbell with it."""
        super()._shutdown_socket()
        self.doorbell.close()

    def send(self, bytestream: bytes) -> None:
        """As pynetdicom's, one writer at a time."""
        with self.sending:
            super().send(bytestream)

    def fill(self, view: memoryview) -> int:
        """Read into ``view`` until it is full or the peer closed the connection; how many
        bytes came. (pynetdicom reads 4 KB at a time and appends them one by one.)"""
        assert self.socket is not None, "only read while connected"
        done = 0
        while done < len(view):
            count = self.socket.recv_into(view[done:])
            if not count:
                break
            done += count
        return done


class ListenerMessages(queue.Queue):  # type: ignore[type-arg]  # pynetdicom's item type
    """The DIMSE message queue of a listener association, which the association thread
    waits on instead of polling it, and which tells whether that thread is serving a
    message it took.

    That thread takes a message with ``get`` and comes back for the next one only when
    it has answered: a ``get`` returning an item marks it busy, the next ``get`` idle,
    both under the queue's lock.
    """

    serving = False

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """The next message; the association thread's look (``block=False``), which it
        repeats every millisecond, waits up to IDLE_WAIT for one or for ``wake``."""
        with self.not_empty:
            self.serving = False
            if not block and not self._qsize():
                self.not_empty.wait(IDLE_WAIT)
        return super().get(block, timeout)

    def wake(self) -> None:
        """Let the association thread look at its other duties (a release, an abort)."""
        with self.not_empty:
            self.not_empty.notify()

    def _get(self) -> Any:
        self.serving = True  # called with the lock held, when an item is taken
        return super()._get()

    @property
    def idle(self) -> bool:
        """No message waits and none is being served."""
        with self.mutex:
            return not self.serving and not self.queue


@dataclass
class _Arriving:
    """A C-STORE request whose data set is still arriving."""

    context_id: int
    command: StoreCommand
    fragments: list[memoryview] = field(default_factory=list)


class StoreArrivals:
    """Serve the C-STORE requests of a listener association from the PDUs themselves.

    The DUL thread hands each P-DATA-TF PDU here first. A PDU that starts a C-STORE
    request (its command set whole in its first value) on an accepted storage context,
    while the association has nothing else under way, is taken, and so are the PDUs of
    that request's data set; once the data set is complete the request is served on
    this thread and its response written to the socket at once. Anything else goes to
    pynetdicom (``take`` returns False) before any of it was consumed, so pynetdicom
    serves other messages, and C-STOREs that arrive while one is under way, as before
    (through the same ``serve``).

    Writing on the DUL thread is safe when nothing else is under way: the association
    thread, the only other sender of messages of several PDUs, is idle, and every PDU
    queued for sending has been sent.
    """

    def __init__(self, association: Association,
                 serve: Callable[[StoreRequest], StoreAnswer]) -> None:
        self.association = association
        self.serve = serve
        self.arriving: _Arriving | None = None

    def take(self, pdu: bytearray) -> bool:
        """Whether this PDU was a C-STORE request's, taken (and served if complete)."""
        dul = self.association.dul
        if pdu[0] != P_DATA_TF or dul.state_machine.current_state != "Sta6":
            self.arriving = None  # an abort or release cuts a request short
            return False
        try:
            values = presentation_values(pdu)
        except CommandError:
            if self.arriving is None:
                return False  # pynetdicom reports what is wrong with it
            return self._abort("a P-DATA-TF PDU inside a C-STORE data set is malformed")
        if self.arriving is None:
            self.arriving = self._start(*values[0])
            if self.arriving is None:
                return False
            values = values[1:]
        for index, (context_id, control, fragment) in enumerate(values):
            if context_id != self.arriving.context_id or control & COMMAND_BIT:
                return self._abort("a C-STORE data set is interleaved with another message")
            self.arriving.fragments.append(fragment)  # a view of the PDU: no copy
            if control & LAST_BIT:
                arrived, self.arriving = self.arriving, None
                self._answer(arrived)
                if index + 1 < len(values):  # another message starts in the same PDU
                    self._pass_on(values[index + 1:])
                break
        return True

    def _start(self, context_id: int, control: int, fragment: memoryview) -> _Arriving | None:
        """The C-STORE request this value's command set starts, if it is served here."""
        association = self.association
        if (control & (COMMAND_BIT | LAST_BIT)) != COMMAND_BIT | LAST_BIT \
                or association.dimse.message is not None \
                or not association.dul.to_provider_queue.empty() \
                or not cast(ListenerMessages, association.dimse.msg_queue).idle \
                or association._sent_release or context_id not in association._accepted_cx:
            return None
        try:
            command = read_store_command(bytes(fragment))
        except CommandError:
            return None  # pynetdicom aborts for an undecodable command set
        if command is None or command.sop_class in association.acceptor.accepted_common_extended \
                or uid_to_service_class(command.sop_class) is not StorageServiceClass:
            return None
        return _Arriving(context_id, command)

    def _answer(self, arrived: _Arriving) -> None:
        """Serve a complete request and send its response. ``DicomScpTimeout`` is about
        a silent peer, not a slow commit: the idle timer waits meanwhile."""
        association = self.association
        context = association._accepted_cx[arrived.context_id]
        command = arrived.command
        request = StoreRequest.received(association, command.sop_class, command.sop_instance,
                                        str(context.transfer_syntax[0]), arrived.fragments)
        idle_timer = association.dul._idle_timer
        idle_timer.stop()
        try:
            answer = self.serve(request)
        except Exception:  # as pynetdicom answers a handler's exception
            log.exception("C-STORE of %s failed", command.sop_instance)
            answer = StoreAnswer(UNABLE_TO_PROCESS, "Internal error")
        finally:
            idle_timer.restart()
        if association.is_established:
            for values in message_pdus(store_response(command, *answer), b"",
                                       association.dimse.maximum_pdu_size):
                association.dul.socket.send(p_data_tf(arrived.context_id, values))

    def _pass_on(self, values: list[tuple[int, int, memoryview]]) -> None:
        """Give pynetdicom the values that follow a served request in the same PDU, as
        its state machine would have."""
        rest = P_DATA()
        rest.presentation_data_value_list = [[context_id, bytes([control]) + bytes(fragment)]
                                             for context_id, control, fragment in values]
        self.association.dimse.receive_primitive(rest)

    def _abort(self, why: str) -> bool:
        log.warning("association from %s aborted: %s",
                    self.association.requestor.ae_title.strip(), why)
        self.arriving = None
        self.association.dul.event_queue.put("Evt19")  # invalid PDU: pynetdicom aborts
        return True


class ListenerDUL(DULServiceProvider):
    """The DUL provider of a listener association: PDUs go to its StoreArrivals first."""

    arrivals: StoreArrivals  # set by ListenerRequestHandler

    def run_reactor(self) -> None:
        """pynetdicom's loop, without its pause after a turn that left no event to act
        on: ``ListenerSocket.ready`` waits for the socket instead. The pause, a sleep of
        no time (``_run_loop_delay`` 0), still cost about 30 µs of CPU and 90 µs of wall
        time on a 2-vCPU VM, at least twice per C-STORE."""
        self._idle_timer.start()
        self.assoc._dul_ready.set()
        while not self._kill_thread:
            if self.artim_timer.expired:  # queued ahead of anything read in this turn
                self.event_queue.put("Evt18")
            try:
                if not self._process_recv_primitive() and self._is_transport_event():
                    self._idle_timer.restart()
            except Exception:
                log.exception("association from %s aborted: serving it failed",
                              self.assoc.requestor.ae_title.strip())
                self._abort_at_once()
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                continue
            self.state_machine.do_action(event)

    def _abort_at_once(self) -> None:
        """As pynetdicom after an error in its loop: an A-ABORT sent past the state
        machine, which the error may have left anywhere, and both threads stopped."""
        abort = A_ABORT_RQ()
        abort.source, abort.reason_diagnostic = 0x02, 0x00
        with contextlib.suppress(OSError):
            self.socket.send(abort.encode())  # type: ignore[union-attr]  # connected
        self.assoc.is_aborted, self.assoc.is_established = True, False
        self.assoc._kill = True
        self._kill_thread = True

    def _process_recv_primitive(self) -> bool:
        """As pynetdicom's, except that a local abort the state machine has no
        transition for is dropped: the server shutting down aborts every association,
        including one already aborting (a bad PDU; awaiting the peer's close, Sta13), and
        pynetdicom's ``InvalidEventError`` then killed this thread."""
        try:
            primitive = self.to_provider_queue.queue[0]
        except IndexError:
            return False
        if isinstance(primitive, A_ABORT | A_P_ABORT) and \
                (ABORT_REQUESTED, self.state_machine.current_state) not in TRANSITION_TABLE:
            self.to_provider_queue.get()  # nothing left to abort
            return True
        return super()._process_recv_primitive()

    def _read_pdu_data(self) -> None:
        """As pynetdicom's, with the socket read in one call and C-STOREs taken first."""
        pdu = self._receive_pdu()
        if pdu is None or self.arrivals.take(pdu):
            return
        try:
            decoded, event = self._decode_pdu(pdu)
        except Exception as exc:
            log.warning("unable to decode a received PDU: %s", exc)
            self.event_queue.put("Evt19")  # invalid PDU
            return
        self.event_queue.put(event)
        self._recv_pdu.put(decoded)

    def _receive_pdu(self) -> bytearray | None:
        """One whole PDU from the socket, or None once the event saying why not (as
        pynetdicom's) is queued."""
        connection = cast(ListenerSocket, self.socket)
        header = bytearray(PDU_HEADER_LENGTH)
        try:
            if connection.fill(memoryview(header)) < len(header):
                self.event_queue.put("Evt17")  # connection closed
                return None
            kind, length = read_pdu_header(header)
            if kind not in PDU_TYPES:
                log.warning("unknown PDU type 0x%02X received", kind)
                self.event_queue.put("Evt19")
                return None
            pdu = header + bytearray(length)  # one buffer, the data set's values read in place
            if connection.fill(memoryview(pdu)[len(header):]) < length:
                self.event_queue.put("Evt17")  # closed before the whole PDU came
                return None
        except OSError:
            self.event_queue.put("Evt17")
            return None
        return pdu


class ListenerDIMSE(DIMSEServiceProvider):
    """The DIMSE provider of a listener association: C-FIND responses are encoded here
    (``commands.py``) and written by the thread that answers; pynetdicom encodes the
    rest, which the DUL thread sends."""

    def send_msg(self, primitive: Any, context_id: int) -> None:
        """Send a C-FIND response at once, or queue a message's P-DATA for the DUL
        thread. pynetdicom's own encoding stays for every other message, and for all
        when its log handlers want to see them.

        Queueing a response woke the DUL thread to send it, and the two threads then
        contended for the GIL on every answer of a query. Writing directly is what the
        DUL thread would do in ``Sta6`` (send the PDU, stay in the state), so it is done
        only there, and only when nothing queued earlier is still to be sent."""
        if not isinstance(primitive, C_FIND) or primitive.MessageIDBeingRespondedTo is None \
                or self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
            super().send_msg(primitive, context_id)
            return
        identifier = primitive.Identifier
        command = response_command(
            C_FIND_RSP, primitive.MessageIDBeingRespondedTo, primitive.AffectedSOPClassUID,
            primitive.Status, primitive.ErrorComment, data_set=identifier is not None)
        data_set = b"" if identifier is None else identifier.getvalue()
        pdus = message_pdus(command, data_set, self.maximum_pdu_size)
        dul = self.dul
        if dul.state_machine.current_state == "Sta6" and dul.to_provider_queue.empty():
            dul.socket.send(b"".join(p_data_tf(context_id, values) for values in pdus))
            return
        for values in pdus:
            pdata = P_DATA()
            pdata.presentation_data_value_list = [
                [context_id, bytes([control]) + fragment] for control, fragment in values]
            dul.send_pdu(pdata)


class ListenerRequestHandler(RequestHandler):
    """pynetdicom's request handler, giving each association the behaviour above."""

    def _create_association(self) -> Association:
        association = super()._create_association()
        # pynetdicom builds the DUL provider and its AssociationSocket itself: give them
        # the methods of our subclasses (whose only state is ``arrivals``, ``doorbell`` and
        # ``sending``).
        association.dul.socket.__class__ = ListenerSocket
        association.dul.__class__ = ListenerDUL
        association.dimse.__class__ = ListenerDIMSE
        dul = cast(ListenerDUL, association.dul)
        dul._run_loop_delay = 0  # ListenerSocket.ready waits instead
        dul._target = make_target(dul.run_reactor)  # the thread took pynetdicom's loop
        dul.arrivals = StoreArrivals(association, cast(ListenerServer, self.server).serve_store)
        # The threads wait for each other's items instead of polling for them.
        connection = cast(ListenerSocket, dul.socket)
        connection.sending = threading.Lock()
        doorbell = connection.doorbell = Doorbell()
        dul.to_provider_queue = Ringing(doorbell.ring)
        messages = association.dimse.msg_queue = ListenerMessages()
        dul.to_user_queue = Ringing(messages.wake)
        return association
