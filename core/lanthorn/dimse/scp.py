"""The DICOM listener: C-ECHO and C-STORE into the one ingest path.

Received datasets are taken as encoded bytes (no decoding, no re-encoding), so what a
modality sends is what ``/instances/{id}/file`` returns.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import TYPE_CHECKING

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from ..errors import BadFileFormat, LanthornError, Rejected, StorageFull
from ..types import Origin

if TYPE_CHECKING:
    from pynetdicom.events import Event

    from ..server import Server

log = logging.getLogger(__name__)

#: C-STORE statuses (PS3.4 B.2.3).
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
REFUSED = 0xA900  # data set does not match SOP class / refused by policy
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110


def make_application_entity(server: Server) -> AE:
    ae = AE(ae_title=server.config["DicomAet"])
    ae.maximum_associations = int(server.config["DicomThreadsCount"])
    ae.network_timeout = float(server.config["DicomScpTimeout"])
    ae.acse_timeout = ae.dimse_timeout = float(server.config["DicomScpTimeout"])
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    return ae


class SharedPortServer(ThreadedAssociationServer):
    """An association server whose port other worker processes may also listen on.

    With ``SO_REUSEPORT`` the kernel spreads incoming associations across the
    processes, so DICOM ingest scales with ``Workers`` like HTTP does.
    """

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def start_listener(server: Server) -> ThreadedAssociationServer:
    """Listen on ``DicomBindAddress:DicomPort`` in background threads."""
    ae = make_application_entity(server)
    address = (server.config["DicomBindAddress"] or "0.0.0.0", int(server.config["DicomPort"]))
    handlers = [(evt.EVT_C_ECHO, _on_echo), (evt.EVT_C_STORE, _on_store, [server])]
    listener = ae.make_server(address, evt_handlers=handlers, server_class=SharedPortServer)
    threading.Thread(target=listener.serve_forever, name="lanthorn-dicom", daemon=True).start()
    ae._servers.append(listener)  # so that AE.shutdown() also stops it
    return listener


def _on_echo(event: Event) -> int:
    return SUCCESS


def _on_store(event: Event, server: Server) -> int:
    requestor = event.assoc.requestor
    origin = Origin("DicomProtocol", remote_ip=requestor.address,
                    remote_aet=requestor.ae_title.strip(),
                    called_aet=event.assoc.acceptor.ae_title.strip())
    try:
        server.ingest.store(event.encoded_dataset(include_meta=True), origin)
    except BadFileFormat as exc:
        log.warning("C-STORE from %s refused: %s", origin.remote_aet, exc)
        return CANNOT_UNDERSTAND
    except Rejected as exc:
        log.warning("C-STORE from %s rejected: %s", origin.remote_aet, exc)
        return REFUSED
    except StorageFull:
        return OUT_OF_RESOURCES
    except LanthornError as exc:
        log.error("C-STORE from %s failed: %s", origin.remote_aet, exc)
        return PROCESSING_FAILURE
    return SUCCESS
