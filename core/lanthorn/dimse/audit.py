"""The DICOM side of the audit log: one entry per C-STORE, C-FIND, C-MOVE and C-GET,
named by the peer's AET and address (see ``lanthorn.audit``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..index.audit import AuditEntry
from .request import origin_of

if TYPE_CHECKING:
    from pydicom.dataset import Dataset
    from pynetdicom.association import Association
    from pynetdicom.events import Event

    from ..server import Server

#: Statuses of the DIMSE operations (PS3.4 C.4): pending, and what pynetdicom answers
#: when a handler raises ("unable to process").
PENDING = 0xFF00
SUCCESS = 0x0000
MOVE_DESTINATION_UNKNOWN = 0xA801
UNABLE_TO_PROCESS = {"query": 0xC311, "move": 0xC514, "get": 0xC413}


def dimse_entry(association: Association, action: str, status: int | None,
                level: str | None = None, resource: str | None = None,
                **details: Any) -> AuditEntry:
    """What the peer of an association did, named by its AET."""
    origin = origin_of(association)
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
            outcome["status"] = UNABLE_TO_PROCESS[action]
            raise
        finally:
            server.audit.record(dimse_entry(event.assoc, action, outcome.pop("status"),
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
