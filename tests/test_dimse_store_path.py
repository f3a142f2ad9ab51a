"""The listener's own C-STORE path (``lanthorn.dimse.reactor.StoreArrivals``) and its
command codec (``lanthorn.dimse.commands``, which also writes the C-FIND responses):
checked against pynetdicom's encoder and decoder, and from a peer that writes PDUs on a
raw socket, arranging them in the ways the standard allows and the usual tools never
do."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pydicom
import pytest
from dimse_peers import (
    association_request,
    data_set_of,
    listening,
    next_pdu,
    next_pdu_type,
    scu,
    store_request_pdus,
)
from pynetdicom import AE, Association
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_messages import C_FIND_RSP as C_FIND_RSP_MESSAGE
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_STORE
from pynetdicom.dsutils import decode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import A_ABORT
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

import lanthorn
from lanthorn.dimse.commands import (
    C_FIND_RSP,
    COMMAND_BIT,
    LAST_BIT,
    CommandError,
    StoreCommand,
    message_pdus,
    p_data_tf,
    presentation_values,
    read_store_command,
    response_command,
    store_response,
)
from lanthorn.dimse.reactor import (
    IDLE_WAIT,
    Doorbell,
    ListenerDUL,
    ListenerMessages,
    ListenerSocket,
    StoreArrivals,
)
from lanthorn.testing import make_instance

UID = "1.2.826.0.1.3680043.8.498.1234567"  # odd length: padded


def pynetdicom_command(primitive: C_STORE | C_ECHO, message: DIMSEMessage) -> bytes:
    """The command set pynetdicom encodes for a request."""
    message.primitive_to_message(primitive)
    [pdu] = list(message.encode_msg(1, 0))[:1]
    return bytes(pdu.presentation_data_value_list[0][1][1:])


def test_a_store_command_reads_as_pynetdicom_wrote_it() -> None:
    request = C_STORE()
    request.MessageID, request.Priority = 4242, 2
    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = CTImageStorage, UID
    request.DataSet = io.BytesIO(b"\0" * 8)
    assert read_store_command(pynetdicom_command(request, C_STORE_RQ())) == \
        StoreCommand(4242, CTImageStorage, UID)
    echo = C_ECHO()
    echo.MessageID = 1
    assert read_store_command(pynetdicom_command(echo, C_ECHO_RQ())) is None


@pytest.mark.parametrize("encoded", [
    b"\0\0\0\0\4\0\0\0",  # a group length with no value
    b"\x08\0\x18\0\2\0\0\0ab",  # an element outside group 0000
    b"\0\0\0\1\2\0\0\0\1",  # an element header cut short
])
def test_a_malformed_command_set_is_an_error(encoded: bytes) -> None:
    with pytest.raises(CommandError):
        read_store_command(encoded)


@pytest.mark.parametrize("comment", [None, "Odd-length reason", "Even length reason"])
def test_a_store_response_decodes_in_pynetdicom(comment: str | None) -> None:
    encoded = store_response(StoreCommand(7, CTImageStorage, UID), 0xC000, comment)
    command = decode(io.BytesIO(encoded), True, True)
    assert command.CommandGroupLength == len(encoded) - 12
    assert (command.CommandField, command.MessageIDBeingRespondedTo, command.Status) == \
        (0x8001, 7, 0xC000)
    assert (command.AffectedSOPClassUID, command.AffectedSOPInstanceUID) == (CTImageStorage, UID)
    assert command.CommandDataSetType == 0x0101
    assert command.get("ErrorComment") == comment


def test_a_find_response_decodes_in_pynetdicom_as_the_message_it_wrote() -> None:
    ours = response_command(C_FIND_RSP, 7, CTImageStorage, 0xFF00, data_set=True)
    theirs = C_FIND()
    theirs.MessageIDBeingRespondedTo, theirs.AffectedSOPClassUID = 7, CTImageStorage
    theirs.Status, theirs.Identifier = 0xFF00, io.BytesIO(b"\0" * 8)
    message = C_FIND_RSP_MESSAGE()
    message.primitive_to_message(theirs)
    assert decode(io.BytesIO(ours), True, True) == message.command_set
    final = decode(io.BytesIO(response_command(C_FIND_RSP, 7, CTImageStorage, 0xC000, "Why")),
                   True, True)
    assert (final.CommandDataSetType, final.Status, final.ErrorComment) == (0x0101, 0xC000, "Why")


@pytest.mark.parametrize(("maximum_length", "data_set", "pdu_count"), [
    (0, b"", 1), (64, b"", 2), (16384, b"", 1),  # a command set alone: 98 bytes
    (0, b"\1" * 1000, 1), (16384, b"\1" * 1000, 1),  # one PDU, one write
    (500, b"\1" * 1000, 3), (64, b"\1" * 100, 4),
])
def test_a_message_is_fragmented_to_the_peers_maximum_pdu_length(
        maximum_length: int, data_set: bytes, pdu_count: int) -> None:
    encoded = response_command(C_FIND_RSP, 7, CTImageStorage, 0xFF00, data_set=bool(data_set))
    pdus = [p_data_tf(3, values) for values in message_pdus(encoded, data_set, maximum_length)]
    assert len(pdus) == pdu_count
    message = DIMSEMessage()
    for index, pdu in enumerate(pdus):
        assert maximum_length == 0 or len(pdu) - 6 <= maximum_length
        decoded = P_DATA_TF()
        decoded.decode(pdu)
        assert message.decode_msg(decoded.to_primitive()) == (index == len(pdus) - 1)
    response = message.message_to_primitive()
    assert (response.Status, response.MessageIDBeingRespondedTo, message.context_id) == \
        (0xFF00, 7, 3)
    assert response.Identifier.getvalue() == data_set


@pytest.mark.parametrize("pdu", [
    b"\4\0\0\0\0\5\0\0\0\1\1",  # an item longer than the PDU
    b"\4\0\0\0\0\6\0\0\0\1\1\3",  # a PDU length that is not its length
    b"\4\0\0\0\0\3\0\0\0",  # an item header cut short
])
def test_a_malformed_p_data_tf_pdu_is_an_error(pdu: bytes) -> None:
    with pytest.raises(CommandError):
        presentation_values(pdu)


# -- through the listener, from a raw socket --------------------------------------------

@pytest.fixture
def peer(lanthorn_server: lanthorn.Server, request: pytest.FixtureRequest
         ) -> Iterator[socket.socket]:
    """An association with the listener (maximum PDU length: the test's parameter)."""
    maximum_length = getattr(request, "param", 16382)
    with listening(lanthorn_server), socket.create_connection(
            ("127.0.0.1", lanthorn_server.config["DicomPort"]), timeout=10) as connection:
        connection.sendall(association_request("LANTHORN", maximum_length))
        assert next_pdu_type(connection) == 0x02  # A-ASSOCIATE-AC
        yield connection


def responses(peer: socket.socket, count: int) -> list[pydicom.Dataset]:
    """The next ``count`` responses (command sets), each reassembled from its PDUs."""
    answers, fragments = [], b""
    while len(answers) < count:
        pdu = next_pdu(peer)
        assert pdu is not None and pdu[0] == 0x04, "a P-DATA-TF PDU"
        for _, control, fragment in presentation_values(pdu):
            assert control & COMMAND_BIT
            fragments += bytes(fragment)
            if control & LAST_BIT:
                answers.append(decode(io.BytesIO(fragments), True, True))
                fragments = b""
    return answers


def merged(pdus: list[bytes]) -> bytes:
    """One P-DATA-TF PDU holding the values of all of these."""
    items = b"".join(pdu[6:] for pdu in pdus)
    return b"\4\0" + len(items).to_bytes(4, "big") + items


def instance_count(server: lanthorn.Server) -> int:
    return server.index.statistics().count_by_level[lanthorn.Level.INSTANCE]


@pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1")
def test_two_requests_in_one_pdu_are_both_stored_and_answered(
        peer: socket.socket, lanthorn_server: lanthorn.Server) -> None:
    """A PDU may hold a command set with its data set, and the values of the next
    message after them: the second request goes to pynetdicom, which serves it too."""
    first = store_request_pdus(data_set_of(make_instance(PatientID="ONE")), message_id=1)
    second = store_request_pdus(data_set_of(make_instance(PatientID="TWO")), message_id=2)
    peer.sendall(merged(first + second))
    answers = responses(peer, 2)
    assert [(a.MessageIDBeingRespondedTo, a.Status) for a in answers] == [(1, 0), (2, 0)]
    assert instance_count(lanthorn_server) == 2


@pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1")
@pytest.mark.parametrize("peer", [64], indirect=True)
def test_a_peer_with_tiny_pdus_gets_its_response_in_pieces(
        peer: socket.socket, lanthorn_server: lanthorn.Server) -> None:
    for pdu in store_request_pdus(data_set_of(make_instance()), maximum_length=64):
        peer.sendall(pdu)
    [answer] = responses(peer, 1)
    assert answer.Status == 0 and instance_count(lanthorn_server) == 1


@pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1")
def test_a_failure_status_says_why(peer: socket.socket,
                                   lanthorn_server: lanthorn.Server) -> None:
    dataset = pydicom.dcmread(io.BytesIO(make_instance()))
    del dataset.StudyInstanceUID
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    for pdu in store_request_pdus(data_set_of(buffer.getvalue())):
        peer.sendall(pdu)
    [answer] = responses(peer, 1)
    assert answer.Status == 0xC000
    assert "StudyInstanceUID" in answer.ErrorComment
    assert instance_count(lanthorn_server) == 0


@pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1")
def test_a_data_set_interleaved_with_another_message_aborts(
        peer: socket.socket, lanthorn_server: lanthorn.Server,
        caplog: pytest.LogCaptureFixture) -> None:
    instance = make_instance(rows=128, columns=128)  # 32 kB of pixels: several PDUs
    first = store_request_pdus(data_set_of(instance), message_id=1)
    second = store_request_pdus(data_set_of(make_instance()), message_id=2)
    for pdu in [first[0], first[1], second[0]]:  # a command before the first data set ends
        peer.sendall(pdu)
    assert next_pdu_type(peer) == 0x07  # A-ABORT
    assert "interleaved" in caplog.text
    assert instance_count(lanthorn_server) == 0


@pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1")
def test_an_error_in_the_association_loop_aborts_it_and_the_listener_goes_on(
        peer: socket.socket, lanthorn_server: lanthorn.Server,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The DUL thread's own loop (``ListenerDUL.run_reactor``) aborts an association
    whose serving raised, as pynetdicom's does, and logs why."""
    def failing(arrivals: StoreArrivals, pdu: bytearray) -> bool:
        raise RuntimeError("a fault in the C-STORE path")

    monkeypatch.setattr(StoreArrivals, "take", failing)
    peer.sendall(store_request_pdus(data_set_of(make_instance()))[0])
    assert next_pdu_type(peer) == 0x07  # A-ABORT
    assert "VANISHING aborted: serving it failed" in caplog.text
    assert "a fault in the C-STORE path" in caplog.text
    monkeypatch.undo()
    with scu(lanthorn_server.config["DicomPort"], Verification) as association:
        assert association.send_c_echo().Status == 0x0000


@pytest.mark.parametrize(("state", "queued"), [("Sta13", []), ("Sta6", ["Evt15"])])
def test_a_local_abort_while_the_association_aborts_is_dropped(state: str,
                                                               queued: list[str]) -> None:
    """The listener aborted an association (a bad PDU) and waits for the peer to close
    (Sta13) when the server shuts down and aborts every association: pynetdicom's state
    machine has no transition for that second abort, and the DUL thread died of it
    (seen in CI, after another test, as a thread exception). An established
    association (Sta6) is aborted as before. The DUL is a real one that is not started:
    its thread would race the test for the queue."""
    association = Association(AE(), mode="acceptor")
    dul = association.dul
    dul.__class__ = ListenerDUL
    dul.state_machine.current_state = state
    dul.to_provider_queue.put(A_ABORT())
    assert dul._process_recv_primitive()
    assert list(dul.event_queue.queue) == queued
    # Dropped; or left for the state machine's action (AA-1), which sends it.
    assert len(dul.to_provider_queue.queue) == len(queued)


# -- threads that wait instead of polling -------------------------------------------------

@pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1")
def test_an_idle_association_does_not_poll(lanthorn_server: lanthorn.Server,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom's threads looked for work every millisecond (4 % of a core per open
    association); the listener's wait for it. Calls are counted, not timed: a loaded
    machine only makes fewer of them."""
    calls = {"get": 0, "ready": 0, "rung": 0}
    counted(monkeypatch, ListenerMessages, "get", calls)
    counted(monkeypatch, ListenerSocket, "ready", calls, is_property=True)
    counted(monkeypatch, Doorbell, "clear", calls, name="rung")
    with listening(lanthorn_server), \
            scu(lanthorn_server.config["DicomPort"], Verification) as association:
        time.sleep(0.2)  # the association is up and idle
        before = dict(calls)
        time.sleep(0.5)
        idle = {key: calls[key] - before[key] for key in ("get", "ready")}
        assert association.send_c_echo().Status == 0x0000  # answered by the other thread
    assert idle["get"] <= 0.5 / IDLE_WAIT + 2 and idle["ready"] <= 0.5 / IDLE_WAIT + 2, idle
    assert calls["rung"] >= 1  # the answer rang the DUL thread's doorbell


@pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1")
def test_the_association_loop_does_not_pause_between_turns(
        lanthorn_server: lanthorn.Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom's loop sleeps after each turn that leaves no event to act on, for no
    time in the listener's (``_run_loop_delay`` 0): still a system call and a turn of
    the scheduler, twice per C-STORE, which the listener's own loop does without."""
    paused: list[float] = []
    sleep = time.sleep

    def recorded(seconds: float) -> None:
        if isinstance(threading.current_thread(), ListenerDUL):  # not the SCU's threads
            paused.append(seconds)
        sleep(seconds)

    with listening(lanthorn_server), \
            scu(lanthorn_server.config["DicomPort"], CTImageStorage) as association:
        monkeypatch.setattr(time, "sleep", recorded)
        for _ in range(5):
            data_set = pydicom.dcmread(io.BytesIO(make_instance()))
            assert association.send_c_store(data_set).Status == 0x0000
        monkeypatch.undo()
    assert 0 not in paused
    assert instance_count(lanthorn_server) == 5


def counted(monkeypatch: pytest.MonkeyPatch, cls: type, attribute: str, calls: dict[str, int],
            *, is_property: bool = False, name: str | None = None) -> None:
    original = getattr(cls, attribute)
    function = original.fget if is_property else original

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[name or attribute] += 1
        return function(*args, **kwargs)

    monkeypatch.setattr(cls, attribute, property(counting) if is_property else counting)


@pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1")
def test_associations_leave_no_open_files(lanthorn_server: lanthorn.Server,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Each association's doorbell is a socket pair: it must close with the connection
    however that ends (released, or aborted by a peer that sent garbage or nothing)."""
    port = lanthorn_server.config["DicomPort"]
    doorbells: list[Doorbell] = []
    made = Doorbell.__init__

    def remembered(self: Doorbell) -> None:
        made(self)
        doorbells.append(self)

    monkeypatch.setattr(Doorbell, "__init__", remembered)
    with listening(lanthorn_server):
        for _ in range(3):
            with scu(port, Verification) as association:
                assert association.send_c_echo().Status == 0x0000
            for garbage in (b"\1\0\0\0\0\x10" + b"x" * 8, b""):
                with socket.create_connection(("127.0.0.1", port)) as vanishing:
                    vanishing.sendall(garbage)
        deadline = time.monotonic() + 10  # the listener takes connections as they come
        while time.monotonic() < deadline and not (
                len(doorbells) == 9 and all(d.fileno() == -1 for d in doorbells)):
            time.sleep(0.1)
        assert len(doorbells) == 9
        assert [d.fileno() for d in doorbells] == [-1] * 9
