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
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
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
