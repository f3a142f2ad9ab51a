"""Helpers of the DICOM network tests: the listener in the test process, real peers
(DCMTK tools, pynetdicom AEs on free ports) and stored test data.

The listener runs in the test process so that tests can look at its live sockets and
associations; the warning filters of pytest then also apply to its threads.
"""

from __future__ import annotations

import io
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, build_context, evt
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.pdu import A_ASSOCIATE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from lanthorn import Origin, Server
from lanthorn.dimse.scp import start_listener
from lanthorn.testing import free_port, make_instance, require_tool

SCU_AET = "TESTSCU"
PEER_AET = "PEER"


@contextmanager
def listening(server: Server) -> Iterator[ThreadedAssociationServer]:
    """The server's DICOM listener, stopped (associations aborted) on leaving."""
    listener = start_listener(server)
    try:
        yield listener
    finally:
        listener.ae.shutdown()


def store(server: Server, **tags: Any) -> Dataset:
    """Store a new instance with these tags; its dataset (for its UIDs)."""
    data = make_instance(**tags)
    server.ingest.store(data, Origin())
    return pydicom.dcmread(io.BytesIO(data))


def dcmtk(tool: str, port: int, *args: str, aet: str = SCU_AET,
          files: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK network tool against the listener on ``port`` (verbose, to read statuses)."""
    return subprocess.run([require_tool(tool, "dcmtk"), "-v", "-aet", aet, "-aec", "LANTHORN",
                           *args, "127.0.0.1", str(port), *files],
                          capture_output=True, text=True, timeout=60)


def read_answers(folder: Path) -> list[Dataset]:
    """The answers ``findscu -X`` wrote, in order."""
    return [pydicom.dcmread(path) for path in sorted(folder.glob("rsp*.dcm"))]


@contextmanager
def scu(port: int, *models: str, aet: str = SCU_AET, **options: Any) -> Iterator[Any]:
    """A pynetdicom association with the listener on ``port``, released on leaving."""
    ae = AE(aet)
    for model in models:
        ae.add_requested_context(model)
    association = ae.associate("127.0.0.1", port, ae_title="LANTHORN", **options)
    assert association.is_established, "the listener refused the association"
    try:
        yield association
    finally:
        association.release()


def tcp_nodelay(association: Any) -> bool:
    """Whether Nagle's algorithm is off on a live association's socket."""
    sock = association.dul.socket.socket
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


@dataclass
class Received:
    sop_instance: str
    transfer_syntax: str
    move_originator: str | None
    data_set: bytes


@dataclass
class StoreSCP:
    """A pynetdicom storage SCP on a free port that records what it receives."""

    syntaxes: list[str] | None = None  # None: pynetdicom's defaults (uncompressed)
    status: int = 0x0000
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    seen_during_store: list[Any] = field(default_factory=list)
    on_store: Any = None  # called with the event, in the SCP's thread

    @contextmanager
    def running(self) -> Iterator[StoreSCP]:
        ae = AE(PEER_AET)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, self.syntaxes)
        ae.add_supported_context("1.2.840.10008.1.1")  # Verification
        server = ae.make_server(("127.0.0.1", self.port),
                                evt_handlers=[(evt.EVT_C_STORE, self._store)])
        ae._servers.append(server)  # which server.shutdown() expects
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        try:
            yield self
        finally:
            server.shutdown()

    def _store(self, event: Event) -> int:
        if self.on_store is not None:
            self.seen_during_store.append(self.on_store(event))
        self.received.append(Received(
            str(event.request.AffectedSOPInstanceUID), str(event.context.transfer_syntax),
            event.request.MoveOriginatorApplicationEntityTitle,
            event.encoded_dataset(include_meta=False)))
        return self.status


# -- a peer speaking PDUs over a raw socket -------------------------------------------

def association_request(called: str, maximum_length: int = 16382) -> bytes:
    """An A-ASSOCIATE-RQ PDU from AET "VANISHING" for CT Image Storage (context 1)."""
    request = A_ASSOCIATE()
    request.application_context_name = "1.2.840.10008.3.1.1.1"
    request.calling_ae_title, request.called_ae_title = "VANISHING", called
    context = build_context(CTImageStorage, ExplicitVRLittleEndian)
    context.context_id = 1
    request.presentation_context_definition_list = [context]
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = maximum_length
    request.user_information = [maximum]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(request)
    return pdu.encode()


def store_request_pdus(data_set: bytes, context_id: int = 1, message_id: int = 1,
                       maximum_length: int = 16382) -> list[bytes]:
    """The P-DATA-TF PDUs of a C-STORE request, as pynetdicom encodes them."""
    request = C_STORE()
    request.MessageID, request.Priority = message_id, 2
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = pydicom.uid.generate_uid()
    request.DataSet = io.BytesIO(data_set)
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    pdus = []
    for primitive in message.encode_msg(context_id, maximum_length):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        pdus.append(pdu.encode())
    return pdus


def data_set_of(instance: bytes) -> bytes:
    """The data set of a DICOM file, without the preamble and file meta information."""
    meta = pydicom.dcmread(io.BytesIO(instance)).file_meta
    return instance[meta.get("FileMetaInformationGroupLength") + 144:]


def next_pdu(peer: socket.socket) -> bytes | None:
    """One whole PDU (None: the connection was closed)."""
    header = peer.recv(6, socket.MSG_WAITALL)
    if len(header) < 6:
        return None
    return header + peer.recv(int.from_bytes(header[2:6], "big"), socket.MSG_WAITALL)


def next_pdu_type(peer: socket.socket) -> int | None:
    """Read one whole PDU; its type (None: the connection was closed)."""
    pdu = next_pdu(peer)
    return None if pdu is None else pdu[0]
