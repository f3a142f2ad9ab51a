"""C-MOVE and C-GET SCP: which instances (plugins or the index), then the sub-operations.

The handlers follow pynetdicom's generator contract: C-MOVE yields the destination,
both yield the number of sub-operations and then one dataset per sub-operation;
pynetdicom sends each (over a new association for C-MOVE, over the requesting one for
C-GET) and reports pending and final statuses with the counts and failed instances.
Each dataset is prepared for the association it goes over as a REST store's is
(``scu.prepared``: transcoded when the peer refused its syntax); the association
pynetdicom opens for C-MOVE is caught when it is established, before the first dataset.
C-MOVE runs during the request, or as a store job when ``SynchronousCMove`` is false.

Errors before the first sub-operation (an invalid identifier, a plugin's exception)
are logged here and re-raised: pynetdicom then answers "unable to process" (0xC514 for
C-MOVE, 0xC413 for C-GET), as its contract allows no other status at that point.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pynetdicom import evt

from ..errors import BadRequest
from ..model import IDENTIFIER_KEYWORDS, format_tag, parse_tag
from ..query import build_query
from .request import dimse_request, keys, matching
from .scu import SubOperation, plan, prepared, store_contexts, transcoding_allowed
from .tls import client_context

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.events import Event

    from ..server import Server
    from ..types import DimseRequest
    from .access import AccessRules

log = logging.getLogger(__name__)

PENDING = 0xFF00
CANCEL = 0xFE00


@dataclass
class _Peer:
    """Where sub-operations go: the association (known once established) and whether
    instances may be transcoded for it."""

    transcoding: bool
    association: Association | None = None

    def established(self, event: Event) -> None:
        self.association = event.assoc


def serve_move(event: Event, server: Server, rules: AccessRules) -> Iterator[Any]:
    """EVT_C_MOVE: the destination, the number of sub-operations, then each dataset.

    With ``SynchronousCMove`` false, stored instances go by a "DicomModalityStore" job
    (retried, visible in ``/jobs``) and the C-MOVE succeeds at once with no
    sub-operations, as in Orthanc; instances a plugin made up are sent during the
    request all the same (a job cannot keep them).
    """
    request = _request(event, "C-MOVE")
    destination = rules.destination(request.move_destination)
    if destination is None:
        log.warning('C-MOVE from %s refused: destination "%s" is not in DicomModalities',
                    request.origin.remote_aet, request.move_destination)
        yield None, None  # pynetdicom answers 0xA801, move destination unknown
        return
    items = _items(server, request, "C-MOVE")
    if not server.config["SynchronousCMove"] and all(isinstance(i, str) for i in items):
        job_id = _queue(server, request, destination.name, items, event.request.MessageID)
        log.info("C-MOVE from %s to %s queued as job %s", request.origin.remote_aet,
                 destination.aet, job_id)
        yield destination.host, destination.port
        yield 0  # pynetdicom answers success without associating
        return
    operations = _planned(server, request, "C-MOVE", items)
    peer = _Peer(transcoding_allowed(server, destination))
    options = {"ae_title": destination.aet, "contexts": store_contexts(server, operations),
               "max_pdu": int(server.config["MaximumPduLength"]),
               "evt_handlers": [(evt.EVT_ESTABLISHED, peer.established)]}
    if destination.use_tls:
        options["tls_args"] = (client_context(server.config), None)
    yield destination.host, destination.port, options
    yield len(operations)
    yield from _each(server, request, operations, peer)


def _queue(server: Server, request: DimseRequest, modality: str, items: list[str],
           message_id: int) -> str:
    parameters = {"Modality": modality, "Resources": items,
                  "Instances": server.index.instances_under(items),
                  "MoveOriginatorAet": request.origin.remote_aet,
                  "MoveOriginatorID": message_id}
    return server.jobs.submit("DicomModalityStore", parameters)


def serve_get(event: Event, server: Server, rules: AccessRules) -> Iterator[Any]:
    """EVT_C_GET: the number of sub-operations, then each dataset."""
    request = _request(event, "C-GET")
    operations = _planned(server, request, "C-GET", _items(server, request, "C-GET"))
    requestor = rules.caller(request.origin.remote_aet, request.origin.remote_ip)
    yield len(operations)
    yield from _each(server, request, operations,
                     _Peer(transcoding_allowed(server, requestor), event.assoc))


def _request(event: Event, name: str) -> DimseRequest:
    try:
        return dimse_request(event)
    except BadRequest as exc:
        log.warning("%s from %s refused: %s", name, event.assoc.requestor.ae_title.strip(), exc)
        raise


def _items(server: Server, request: DimseRequest, name: str) -> list[str | Dataset]:
    """What the first plugin answering ``handle_c_move``/``handle_c_get`` says to send."""
    hook = server.plugins.hook.handle_c_move if name == "C-MOVE" else \
        server.plugins.hook.handle_c_get
    try:
        return list(hook(server=server, request=request) or [])
    except Exception as exc:
        log.warning("%s from %s failed: %s", name, request.origin.remote_aet, exc)
        raise


def _planned(server: Server, request: DimseRequest, name: str,
             items: list[str | Dataset]) -> list[SubOperation]:
    operations = plan(server, items)
    log.info("%s from %s: %d instances", name, request.origin.remote_aet, len(operations))
    return operations


def _each(server: Server, request: DimseRequest, operations: list[SubOperation],
          peer: _Peer) -> Iterator[tuple[int, Dataset | None]]:
    """Each dataset to send, prepared for the peer's association."""
    for op in operations:
        if request.is_cancelled():
            yield CANCEL, None
            return
        assert peer.association is not None, "pynetdicom associates before the first dataset"
        yield PENDING, prepared(server, peer.association, op, peer.transcoding)


# -- the core's answer ---------------------------------------------------------------


def core_retrieve(server: Server, request: DimseRequest) -> list[str]:
    """The resources the identifier names, matched by the query engine (public IDs).

    The unique key of the level (StudyInstanceUID for STUDY...) must have a value, so
    that an empty identifier never sends the whole archive.
    """
    level = request.level
    assert level is not None, "the listener sets the level of every query/retrieve request"
    unique = IDENTIFIER_KEYWORDS[level]
    query = matching(keys(request.identifier))
    if not query.get(format_tag(parse_tag(unique)), "").strip("*"):
        raise BadRequest(f"the identifier has no {unique}, the unique key of its level")
    found = server.index.find(build_query(
        level, query, main_tags=server.main_tags,
        case_sensitive_pn=bool(server.config["CaseSensitivePN"])))
    return server.index.public_ids_of(found)
