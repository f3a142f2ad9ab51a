"""Query/retrieve requests as the hooks see them: models, levels and matching keys."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom import sop_class as sop

from ..dicom import element_string, file_meta_information
from ..errors import BadRequest, LanthornError
from ..model import Level, format_tag
from ..requested import COMPUTED_TAGS
from ..types import DimseRequest, Origin

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.events import Event

PATIENT_ROOT = (sop.PatientRootQueryRetrieveInformationModelFind,
                sop.PatientRootQueryRetrieveInformationModelMove,
                sop.PatientRootQueryRetrieveInformationModelGet)
STUDY_ROOT = (sop.StudyRootQueryRetrieveInformationModelFind,
              sop.StudyRootQueryRetrieveInformationModelMove,
              sop.StudyRootQueryRetrieveInformationModelGet)
WORKLIST = sop.ModalityWorklistInformationFind
LEVELS = {"PATIENT": Level.PATIENT, "STUDY": Level.STUDY, "SERIES": Level.SERIES,
          "IMAGE": Level.INSTANCE}
QUERY_RETRIEVE_LEVEL = 0x00080052
RETRIEVE_AE_TITLE = 0x00080054
SPECIFIC_CHARACTER_SET = 0x00080005
#: Elements of an identifier that are neither matched nor returned as asked.
NOT_KEYS = frozenset({SPECIFIC_CHARACTER_SET, QUERY_RETRIEVE_LEVEL, RETRIEVE_AE_TITLE})
NOT_MATCHED_VRS = frozenset({"SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN"})
#: Error Comment (0000,0902) is a LO: at most 64 characters.
MAX_ERROR_COMMENT = 64


def origin_of(association: Association) -> Origin:
    """Who sent a request: the peer of the association, whichever side opened it (C-GET
    sub-operations come from the modality that Lanthorn asked)."""
    peer, us = (association.acceptor, association.requestor) if association.is_requestor \
        else (association.requestor, association.acceptor)
    return Origin("DicomProtocol", remote_ip=peer.address, remote_aet=peer.ae_title.strip(),
                  called_aet=us.ae_title.strip())


@dataclass(frozen=True)
class StoreRequest:
    """A C-STORE request, whichever way it was read (``reactor.py`` or pynetdicom)."""

    association: Association
    file: bytes  # the data set as received, after File Meta Information of ours

    @classmethod
    def received(cls, association: Association, sop_class: str, sop_instance: str,
                 transfer_syntax: str, data_set: Iterable[bytes | memoryview]) -> StoreRequest:
        """The request for a data set received in pieces: its file is made in one copy,
        with the File Meta Information that pynetdicom's ``Event.encoded_dataset``
        gives, encoded more cheaply."""
        meta = file_meta_information(
            sop_class, sop_instance, transfer_syntax,
            (PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION))
        return cls(association, b"".join([meta, *data_set]))

    @classmethod
    def of(cls, event: Event) -> StoreRequest:
        """The request of pynetdicom's EVT_C_STORE."""
        request = event.request
        return cls.received(event.assoc, str(request.AffectedSOPClassUID),
                            str(request.AffectedSOPInstanceUID),
                            str(event.context.transfer_syntax),
                            [event.encoded_dataset(include_meta=False)])


class StoreAnswer(NamedTuple):
    """The status of a C-STORE response and its Error Comment."""

    status: int
    comment: str | None = None

    def as_pynetdicom(self) -> int | Dataset:
        """What a pynetdicom EVT_C_STORE handler returns for it."""
        return self.status if self.comment is None else status_dataset(self.status, self.comment)


def dimse_request(event: Event, *, limits: tuple[int, int] = (0, 0),
                  identifier: Dataset | None = None) -> DimseRequest:
    """The hooks' view of a C-FIND/C-MOVE/C-GET; BadRequest for an invalid identifier.

    ``limits`` are the answers allowed at patient/study/series level and at instance
    level (LimitFindResults, LimitFindInstances). ``identifier`` replaces the one
    received (as a filter changed it).
    """
    sop_class = str(event.request.AffectedSOPClassUID)
    try:
        identifier = event.identifier if identifier is None else identifier
        level = _level(identifier, sop_class)
        keys(identifier)  # every element must decode, or the identifier is invalid
    except BadRequest:
        raise
    except Exception as exc:  # pydicom raises many kinds of errors on undecodable bytes
        raise BadRequest(f"the identifier cannot be decoded: {exc}") from None
    limit = limits[level == Level.INSTANCE] if level is not None else 0
    destination = str(getattr(event, "move_destination", "") or "").strip()  # C-MOVE only
    return DimseRequest(sop_class, identifier, origin_of(event.assoc), level, limit, destination,
                        CancelLatch(event), str(event.context.transfer_syntax))


class CancelLatch:
    """Whether the peer cancelled: pynetdicom forgets a C-CANCEL once it has said so,
    and both a plugin and the listener ask."""

    def __init__(self, event: Event) -> None:
        self.event = event
        self.cancelled = False

    def __call__(self) -> bool:
        self.cancelled = self.cancelled or bool(self.event.is_cancelled)
        return self.cancelled


def _level(identifier: Dataset, sop_class: str) -> Level | None:
    if sop_class == WORKLIST:
        return None
    text = str(identifier.get("QueryRetrieveLevel", "") or "")
    level = LEVELS.get(text.strip().upper())
    if level is None:
        raise BadRequest(f'QueryRetrieveLevel "{text}" is not PATIENT, STUDY, SERIES or IMAGE')
    if level == Level.PATIENT and sop_class in STUDY_ROOT:
        raise BadRequest("the Study Root model has no PATIENT level")
    return level


def keys(identifier: Dataset) -> list[DataElement]:
    """The identifier's keys: the elements to match (when they have a value) and return."""
    return [e for e in identifier if e.tag not in NOT_KEYS and e.tag.group > 0x0002]


def matching(elements: list[DataElement]) -> dict[str, str]:
    """The keys the query engine matches: those with a value it can compare."""
    values = {format_tag(e.tag): element_string(e) or "" for e in elements
              if e.VR not in NOT_MATCHED_VRS and e.tag not in COMPUTED_TAGS}
    return {tag: value for tag, value in values.items() if value}


def failure_status(status: int, exc: LanthornError) -> Dataset:
    """A failure status with the reason as Error Comment, so the peer's log says why."""
    return status_dataset(status, error_comment(exc))


def status_dataset(status: int, comment: str) -> Dataset:
    answer = Dataset()
    answer.Status = status
    answer.ErrorComment = comment
    return answer


def error_comment(exc: LanthornError) -> str:
    """The reason for a failure as an Error Comment, which is a LO of the command set:
    printable ASCII, no backslash, 64 characters."""
    return "".join(c if " " <= c <= "~" and c != "\\" else "?"
                   for c in exc.message)[:MAX_ERROR_COMMENT]
