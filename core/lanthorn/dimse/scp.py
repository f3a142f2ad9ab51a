"""The DICOM listener: who may associate, C-ECHO, and C-STORE into the one ingest path.

Received datasets are taken as encoded bytes (no decoding, no re-encoding), so what a
modality sends is what ``/instances/{id}/file`` returns. C-FIND is answered in
``find.py``, C-MOVE and C-GET in ``retrieve.py``; the access rules are in ``access.py``.

Access is decided when an association is requested: a peer allowed no service at all
is rejected, and the presentation contexts of the services it may not use are not
accepted, so it learns at once (and the log says why). Storage contexts are the
exception, as C-GET returns instances over them: C-STORE is checked at an association's
first C-STORE request, and that answer holds for its others.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import (
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    build_context,
    evt,
)
from pynetdicom import sop_class as sop
from pynetdicom.sop_class import _STORAGE_CLASSES
from pynetdicom.transport import ThreadedAssociationServer

from ..config import ConfigError
from ..errors import BadFileFormat, LanthornError, Rejected, StorageFull
from .access import AccessRules
from .audit import audited, dimse_entry
from .commitment import PUSH_MODEL, serve_n_action, serve_n_event_report
from .find import serve_find
from .reactor import ListenerRequestHandler, ListenerServer, log_dimse_messages_when_shown
from .request import (
    PATIENT_ROOT,
    STUDY_ROOT,
    WORKLIST,
    StoreAnswer,
    StoreRequest,
    error_comment,
    origin_of,
)
from .retrieve import serve_get, serve_move
from .scu import LanthornAE
from .tls import listener_context

if TYPE_CHECKING:
    from pynetdicom.events import Event
    from pynetdicom.presentation import PresentationContext

    from ..server import Server
    from ..types import StoredInstance

log = logging.getLogger(__name__)

#: C-STORE statuses (PS3.4 B.2.3).
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
REFUSED = 0xA900  # data set does not match SOP class / refused by policy
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
NOT_AUTHORIZED = 0x0124


STORAGE_CLASSES = frozenset(c.abstract_syntax for c in AllStoragePresentationContexts)
#: The presentation contexts of the services that access rules govern by negotiation.
SERVICE_CONTEXTS = {
    "Echo": (sop.Verification,),
    "Find": (PATIENT_ROOT[0], STUDY_ROOT[0]),
    "FindWorklist": (WORKLIST,),
    "Move": (PATIENT_ROOT[1], STUDY_ROOT[1]),
    "Get": (PATIENT_ROOT[2], STUDY_ROOT[2]),
}


def make_application_entity(server: Server) -> LanthornAE:
    ae = LanthornAE(ae_title=server.config["DicomAet"])
    ae.maximum_associations = int(server.config["DicomThreadsCount"])
    ae.network_timeout = float(server.config["DicomScpTimeout"])
    ae.acse_timeout = ae.dimse_timeout = float(server.config["DicomScpTimeout"])
    ae.maximum_pdu_size = int(server.config["MaximumPduLength"])
    ae.add_supported_context(sop.Verification, ALL_TRANSFER_SYNTAXES)
    for uid in (*PATIENT_ROOT, *STUDY_ROOT, WORKLIST):
        ae.add_supported_context(uid)  # uncompressed syntaxes
    syntaxes = accepted_syntaxes(server)
    # Storage commitment: requests from modalities (SCP) and their reports to us (SCU).
    ae.add_supported_context(PUSH_MODEL, scu_role=True, scp_role=True)
    for context in AllStoragePresentationContexts:
        # Both roles: a C-GET requestor asks to be the storage SCP of the sub-operations.
        ae.add_supported_context(context.abstract_syntax, syntaxes, scu_role=True,
                                 scp_role=True)
    return ae


def accepted_syntaxes(server: Server) -> list[str]:
    """The transfer syntaxes ``AcceptedTransferSyntaxes`` (with wildcards) lets in."""
    return matching_syntaxes(listener_setting(server, "AcceptedTransferSyntaxes"))


def matching_syntaxes(patterns: list[str]) -> list[str]:
    found = [uid for uid in ALL_TRANSFER_SYNTAXES
             if any(fnmatch.fnmatchcase(uid, str(pattern)) for pattern in patterns)]
    if not found:
        raise ConfigError(f"AcceptedTransferSyntaxes {patterns} matches no transfer syntax")
    return found


#: Listener options that ``PUT /tools/...`` changes while the server runs.
RUNTIME_SETTINGS = ("AcceptedTransferSyntaxes", "UnknownSopClassAccepted")


def listener_setting(server: Server, name: str) -> Any:
    """An option of the listener as the configuration sets it, unless it was changed
    over REST: kept in the index, so every process applies it from its next association
    (until a fresh start, as Orthanc forgets it at a restart)."""
    stored = server.index.global_property(f"listener:{name}")
    return server.config[name] if stored is None else json.loads(stored)


def set_listener_setting(server: Server, name: str, value: Any) -> None:
    server.index.set_global_property(f"listener:{name}", None if value is None
                                     else json.dumps(value))


#: How much later a worker accepts an association for each association it serves.
ACCEPT_HANDICAP = 0.002


class SharedPortServer(ListenerServer):
    """An association server that may accept on a socket the supervisor bound for every
    worker process (``Workers``), as their HTTP servers do.

    Every worker waits for the next connection and whichever takes it first serves it:
    a worker busy storing instances is slower to, so associations go where there is
    room. (``SO_REUSEPORT`` instead hashes each connection to a worker: four
    associations over two workers were split 3:1 or 4:0 half of the time.)
    """

    def __init__(self, *args: Any, serve_store: Callable[[StoreRequest], StoreAnswer],
                 listening: socket.socket | None = None, **kwargs: Any) -> None:
        self.serve_store = serve_store
        self.listening = listening
        #: The connections accepted and still open (an association's thread starts a
        #: little after its connection is accepted).
        self.connections: list[socket.socket] = []
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        if self.listening is None:
            super().server_bind()
            return
        self.socket.close()
        self.socket = self.listening
        # Non-blocking: the workers that lose the race for a connection go back to
        # waiting at once instead of blocking in accept (and in their stop).
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept with Nagle's algorithm off, as ``LanthornAE`` does for its requests.

        In a worker, one that serves fewer associations than others takes the next first.
        With DICOM TLS the handshake happens in the association's own thread, on its first
        read: pynetdicom does it here, in the accept loop, where one client that never
        completes it stalls every other connection.
        """
        if self.listening is not None:
            # A head start for the workers with fewer connections: a burst of them (four
            # storescu started at once) went 3:1 a third of the time without it.
            self.connections = [c for c in self.connections if c.fileno() != -1]
            time.sleep(ACCEPT_HANDICAP * len(self.connections))
        client, address = self.socket.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True,
                                                  do_handshake_on_connect=False)
        self.connections.append(client)
        return client, address

    def service_actions(self) -> None:
        """Nothing between polls of the accept loop.

        pynetdicom runs a full ``gc.collect()`` there every 60 polls (6 s with our 0.1 s
        poll): in a server process holding the index and plugins it took about a quarter
        of a second under load, with the GIL, stalling every association in the middle of
        its transfers (6 % of a C-STORE profile). Python's own generational collector
        frees finished associations all the same.
        """


def start_listener(server: Server, listening: socket.socket | None = None
                   ) -> ThreadedAssociationServer:
    """Listen on ``DicomBindAddress:DicomPort`` in background threads (on ``listening``,
    that port bound already, in the workers of ``lanthorn serve --workers``)."""
    log_dimse_messages_when_shown()
    ae = make_application_entity(server)
    rules = AccessRules(server)
    templates = {context.abstract_syntax: context for context in ae.supported_contexts}
    address = (server.config["DicomBindAddress"] or "0.0.0.0", int(server.config["DicomPort"]))
    handlers = [(evt.EVT_REQUESTED, _on_requested, [rules, server, templates]),
                (evt.EVT_ABORTED, _on_aborted),
                (evt.EVT_C_ECHO, _on_echo),
                (evt.EVT_C_STORE, _on_store, [server, rules]),
                (evt.EVT_C_FIND, audited("query", serve_find), [server]),
                (evt.EVT_C_MOVE, audited("move", serve_move), [server, rules]),
                (evt.EVT_C_GET, audited("get", serve_get), [server, rules]),
                (evt.EVT_N_ACTION, serve_n_action, [server, rules]),
                (evt.EVT_N_EVENT_REPORT, serve_n_event_report, [server, rules])]
    listener = ae.make_server(address, evt_handlers=handlers, server_class=SharedPortServer,
                              ssl_context=listener_context(server.config),
                              request_handler=ListenerRequestHandler,
                              serve_store=partial(answer_store, server, rules),
                              listening=listening)
    # pynetdicom gives each association a deep copy of these: ~150 storage classes in ~35
    # syntaxes took 0.1 s of CPU per association. _on_requested builds each association's
    # from the templates, for the SOP classes it proposes only.
    listener.contexts = []
    # A short poll interval: stopping waits for one poll.
    threading.Thread(target=listener.serve_forever, args=(0.1,), name="lanthorn-dicom",
                     daemon=True).start()
    ae._servers.append(listener)  # so that AE.shutdown() also stops it
    return listener


def _on_requested(event: Event, rules: AccessRules, server: Server,
                  templates: dict[str, PresentationContext]) -> None:
    """Reject the association, or accept only the contexts of the services allowed, in
    the transfer syntaxes accepted now, and those of unknown SOP classes when
    UnknownSopClassAccepted."""
    association = event.assoc
    request = association.requestor.primitive
    calling, called = request.calling_ae_title.strip(), request.called_ae_title.strip()
    address = association.requestor.address
    refusal = rules.association_refusal(calling, called, address)
    if refusal is not None:
        log.warning("association from AET %s at %s rejected: %s", calling, address,
                    refusal.reason)
        association.acse.send_reject(refusal.result, refusal.source, refusal.diagnostic)
        association.kill()  # as pynetdicom does after its own rejections
        return
    proposals = request.presentation_context_definition_list
    proposed = {c.abstract_syntax for c in proposals}
    unknown = _unknown_classes(proposed - templates.keys()) \
        if listener_setting(server, "UnknownSopClassAccepted") else set()
    refused: set[str] = set()
    for service, uids in SERVICE_CONTEXTS.items():
        why = rules.refusal(service, calling, address) if proposed & set(uids) else None
        if why:
            log.warning("association from AET %s at %s: %s is not accepted, as %s",
                        calling, address, service, why)
            refused.update(uids)
    association.acceptor.supported_contexts = _contexts_for(
        proposals, templates, accepted_syntaxes(server), unknown, refused)


def _contexts_for(proposals: list[PresentationContext],
                  templates: dict[str, PresentationContext], syntaxes: list[str],
                  unknown: set[str], refused: set[str]) -> list[PresentationContext]:
    """The contexts an association may accept, for the SOP classes it proposes.

    Storage contexts (and unknown classes') take the transfer syntaxes accepted now (they
    may have changed since the listener started), the others their template's. Each keeps
    only the syntaxes the peer proposed, in our order of preference: negotiation picks
    the same one, and refuses a context for its syntax the same way when none is left.
    """
    offered: dict[str, set[str]] = {}
    for proposal in proposals:
        offered.setdefault(proposal.abstract_syntax, set()).update(proposal.transfer_syntax)
    contexts = []
    for uid, theirs in offered.items():
        template = templates.get(uid)
        if uid in refused or (template is None and uid not in unknown):
            continue
        ours = syntaxes if template is None or uid in STORAGE_CLASSES \
            else template.transfer_syntax
        context = build_context(uid, [syntax for syntax in ours if syntax in theirs])
        if template is not None:
            context.scu_role, context.scp_role = template.scu_role, template.scp_role
        contexts.append(context)
    return contexts


def _unknown_classes(unsupported: set[str]) -> set[str]:
    """The SOP classes among ``unsupported`` that pynetdicom does not know, which are
    accepted as storage in this association.

    pynetdicom dispatches a C-STORE by SOP class, so each such class is also registered
    among its storage classes (only negotiated contexts ever reach the dispatch).
    """
    unknown = {uid for uid in unsupported
               if UID(uid).is_private or not hasattr(sop, UID(uid).keyword or "_")}
    for uid in unknown:
        _STORAGE_CLASSES.setdefault(f"Unknown_{uid}", UID(uid))
    return unknown


def _on_aborted(event: Event) -> None:
    """Log aborted associations (a peer gone mid-transfer, a timeout): nothing half-sent
    is kept, but the admin should know."""
    requestor = event.assoc.requestor
    log.warning("association from AET %s at %s aborted", requestor.ae_title.strip(),
                requestor.address)


def _on_echo(event: Event) -> int:
    return SUCCESS


def _on_store(event: Event, server: Server, rules: AccessRules) -> int | Dataset:
    """pynetdicom's EVT_C_STORE: the C-STOREs that ``StoreArrivals`` did not take."""
    return answer_store(server, rules, StoreRequest.of(event)).as_pynetdicom()


def answer_store(server: Server, rules: AccessRules, request: StoreRequest) -> StoreAnswer:
    """A C-STORE the listener received: checked against the access rules, then stored."""
    origin = origin_of(request.association)
    refusal = rules.store_refusal(request.association, origin.remote_aet, origin.remote_ip)
    if refusal is not None:
        log.warning("C-STORE from %s refused: %s", origin.remote_aet, refusal)
        return _audited(server, request, _failure(NOT_AUTHORIZED, Rejected(refusal)))
    return store_received(server, request)


def on_received_store(event: Event, server: Server) -> int | Dataset:
    """pynetdicom's EVT_C_STORE for the instances a C-GET brings back."""
    return store_received(server, StoreRequest.of(event)).as_pynetdicom()


def store_received(server: Server, request: StoreRequest) -> StoreAnswer:
    """Ingest the instance of a C-STORE request; its status (failures say why)."""
    origin = origin_of(request.association)
    try:
        stored = server.ingest.store(request.file, origin)
    except BadFileFormat as exc:
        log.warning("C-STORE from %s refused: %s", origin.remote_aet, exc)
        return _audited(server, request, _failure(CANNOT_UNDERSTAND, exc))
    except Rejected as exc:
        log.warning("C-STORE from %s rejected: %s", origin.remote_aet, exc)
        return _audited(server, request, _failure(REFUSED, exc))
    except StorageFull as exc:
        return _audited(server, request, _failure(OUT_OF_RESOURCES, exc))
    except LanthornError as exc:
        log.error("C-STORE from %s failed: %s", origin.remote_aet, exc)
        return _audited(server, request, _failure(PROCESSING_FAILURE, exc))
    return _audited(server, request, StoreAnswer(SUCCESS), stored)


def _failure(status: int, exc: LanthornError) -> StoreAnswer:
    return StoreAnswer(status, error_comment(exc))


def _audited(server: Server, request: StoreRequest, answer: StoreAnswer,
             stored: StoredInstance | None = None) -> StoreAnswer:
    """Record a C-STORE (one entry per instance: a queue append) and pass its answer on."""
    if stored is None:
        entry = dimse_entry(request.association, "store", answer.status, Error=answer.comment)
    else:
        entry = dimse_entry(request.association, "store", answer.status, "Instance",
                            stored.id, Outcome=stored.status)
    server.audit.record(entry)
    return answer


