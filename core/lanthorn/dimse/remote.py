"""Query/retrieve against remote modalities: C-FIND and C-MOVE as SCU.

The REST API's ``/modalities/{id}/query``, ``/move``, ``/find-*`` and ``/queries/*`` build
identifiers here and send them over one association each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pynetdicom import StoragePresentationContexts, build_context, build_role, evt
from pynetdicom.status import code_to_category

from ..errors import BadRequest, DimseFailure, NetworkError, Rejected
from ..model import Level, parse_tag
from .request import LEVELS, PATIENT_ROOT, STUDY_ROOT
from .scp import accepted_syntaxes, on_received_store
from .scu import MAX_CONTEXTS, associate

if TYPE_CHECKING:
    from ..server import Server
    from .access import Modality

PENDING = (0xFF00, 0xFF01)
#: Return keys added (empty) to every query, as Orthanc does, so that each answer can be
#: retrieved and queried further: the unique keys of its level and of the levels above.
LEVEL_KEYS = {
    Level.PATIENT: ("PatientID",),
    Level.STUDY: ("AccessionNumber", "StudyInstanceUID"),
    Level.SERIES: ("StudyInstanceUID", "SeriesInstanceUID"),
    Level.INSTANCE: ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"),
}
#: What identifies an answer in a C-MOVE request.
RETRIEVE_KEYS = ("QueryRetrieveLevel", "PatientID", "AccessionNumber", "StudyInstanceUID",
                 "SeriesInstanceUID", "SOPInstanceUID")


def level_name(level: Level) -> str:
    """The QueryRetrieveLevel of a level ("IMAGE" for instances)."""
    return next(name for name, value in LEVELS.items() if value == level)


def level_of(identifier: Dataset) -> Level:
    return LEVELS[str(identifier.QueryRetrieveLevel).strip().upper()]


def find_model(level: Level) -> str:
    """Patient Root for patients, Study Root for the rest (as Orthanc)."""
    return (PATIENT_ROOT if level == Level.PATIENT else STUDY_ROOT)[0]


def move_model(level: Level) -> str:
    return (PATIENT_ROOT if level == Level.PATIENT else STUDY_ROOT)[1]


def get_model(level: Level) -> str:
    return (PATIENT_ROOT if level == Level.PATIENT else STUDY_ROOT)[2]


def dataset_of(values: dict[str, object]) -> Dataset:
    """A dataset from ``{"PatientID": "P*", "0008,0020": "2020-"}``; BadRequest when a
    name is no DICOM tag or a value is no string."""
    dataset = Dataset()
    for name, value in values.items():
        try:
            tag = parse_tag(name)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        if not isinstance(value, str):
            raise BadRequest(f'the value of "{name}" must be a string')
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "LO"
        # An empty value is a return key; None fits every VR (numbers too).
        dataset.add_new(tag, vr if vr != "SQ" else "LO", value or None)
    return dataset


def identifier(query: Dataset, level: Level) -> Dataset:
    """The C-FIND identifier: the query, its level, and the level's keys."""
    sent = Dataset()
    sent.update(query)
    sent.QueryRetrieveLevel = level_name(level)
    for keyword in LEVEL_KEYS[level]:
        if keyword not in sent:
            setattr(sent, keyword, "")
    return sent


def retrieve_identifier(answer: Dataset) -> Dataset:
    """The C-MOVE identifier of a C-FIND answer: its level and unique keys."""
    kept = Dataset()
    for keyword in RETRIEVE_KEYS:
        if keyword in answer:
            setattr(kept, keyword, answer.data_element(keyword).value)
    return kept


def find(server: Server, modality: Modality, query: Dataset, model: str,
         timeout: float | None = None) -> list[Dataset]:
    """C-FIND; the answers, in the order the modality sent them.

    ``filter_outgoing_find_request`` sees (and may change) ``query`` first.
    """
    if not all(server.plugins.hook.filter_outgoing_find_request(server=server,
                                                                modality=modality, query=query)):
        raise Rejected(f'a plugin refused this C-FIND to modality "{modality.name}"')
    answers = []
    with associate(server, modality, [build_context(model)], timeout) as association:
        try:
            responses = association.send_c_find(query, model)
            for status, answer in responses:
                code = _code(modality, "C-FIND", status)
                if code not in PENDING:
                    break
                if answer is not None:
                    answers.append(answer)
        except ValueError as exc:  # the modality accepted no context for the model
            raise DimseFailure(f'modality "{modality.name}" refused C-FIND: {exc}') from None
    return answers


def move(server: Server, modality: Modality, query: Dataset, model: str, target_aet: str,
         timeout: float | None = None) -> None:
    """C-MOVE of what ``query`` identifies to ``target_aet``; returns when it is done."""
    with associate(server, modality, [build_context(model)], timeout) as association:
        try:
            responses = association.send_c_move(query, target_aet, model)
            for status, _ in responses:
                if _code(modality, "C-MOVE", status) not in PENDING:
                    break
        except ValueError as exc:
            raise DimseFailure(f'modality "{modality.name}" refused C-MOVE: {exc}') from None


def get(server: Server, modality: Modality, query: Dataset, timeout: float | None = None
        ) -> None:
    """C-GET of what ``query`` identifies: the instances come back over the same
    association and go through the ingest path, as if the modality had sent them.

    The storage contexts proposed (with the SCP role) are pynetdicom's list of the
    common storage SOP classes, as many as fit beside the C-GET context.
    """
    model = get_model(level_of(query))
    syntaxes = accepted_syntaxes(server)
    storage = [c.abstract_syntax for c in StoragePresentationContexts][:MAX_CONTEXTS - 1]
    contexts = [build_context(model), *(build_context(uid, syntaxes) for uid in storage)]
    roles = [build_role(uid, scp_role=True) for uid in storage]
    handlers = [(evt.EVT_C_STORE, on_received_store, [server])]
    with associate(server, modality, contexts, timeout, ext_neg=roles,
                   evt_handlers=handlers) as association:
        try:
            for status, _ in association.send_c_get(query, model):
                if _code(modality, "C-GET", status) not in PENDING:
                    break
        except ValueError as exc:
            raise DimseFailure(f'modality "{modality.name}" refused C-GET: {exc}') from None


def _code(modality: Modality, service: str, status: Dataset | None) -> int:
    """The status code of a response; an error for a failure or a lost association."""
    code = status.get("Status") if status else None
    if code is None:
        raise NetworkError(f'{service} to modality "{modality.name}": no answer (the '
                           "association was aborted or timed out)")
    if code not in PENDING and code_to_category(code) not in ("Success", "Warning"):
        comment = status.get("ErrorComment", "")
        raise DimseFailure(f'{service} to modality "{modality.name}" failed with status '
                           f"0x{code:04X}" + (f": {comment}" if comment else ""))
    return code
