"""C-FIND SCP: query/retrieve and worklist queries, answered by plugins or the index.

The listener side (``serve_find``) turns a request into a :class:`DimseRequest`, asks
``handle_c_find`` or ``handle_worklist_find`` and streams the answers as pending
responses. The core's answer (``core_find``) runs the one query engine on the index and
builds each answer from what the index keeps: main tags, computed tags and the saved
instance headers. Files are never read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydicom.charset import convert_encodings, python_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID

from ..errors import BadRequest, Rejected
from ..query import build_query
from ..requested import Value, asked_vr, requested_values, typed_element
from .request import (
    QUERY_RETRIEVE_LEVEL,
    RETRIEVE_AE_TITLE,
    SPECIFIC_CHARACTER_SET,
    WORKLIST,
    dimse_request,
    failure_status,
    keys,
    matching,
)

if TYPE_CHECKING:
    from pynetdicom.events import Event

    from ..server import Server
    from ..types import DimseRequest

log = logging.getLogger(__name__)

PENDING = 0xFF00
CANCEL = 0xFE00  # also sent when LimitFindResults cuts the answers short, as Orthanc does
SOP_CLASS_NOT_SUPPORTED = 0x0122
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000

Response = tuple[int | Dataset, Dataset | None]  # a status, or one with Error Comment

#: ``DefaultEncoding`` (Orthanc's names) as Specific Character Set terms.
CHARACTER_SETS = {
    "Ascii": "ISO_IR 6", "Latin1": "ISO_IR 100", "Latin2": "ISO_IR 101",
    "Latin3": "ISO_IR 109", "Latin4": "ISO_IR 110", "Latin5": "ISO_IR 148",
    "Cyrillic": "ISO_IR 144", "Arabic": "ISO_IR 127", "Greek": "ISO_IR 126",
    "Hebrew": "ISO_IR 138", "Thai": "ISO_IR 166", "Utf8": "ISO_IR 192",
}
UTF8 = "ISO_IR 192"
TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC"})
#: VRs whose value the index keeps as the very string DICOM encodes (several values
#: joined by a backslash, as DICOM writes them).
STRING_VRS = TEXT_VRS | {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"}


# -- the listener side ------------------------------------------------------------------


def serve_find(event: Event, server: Server) -> Iterator[Response]:
    """EVT_C_FIND: the first plugin's answers as pending responses, then the final status."""
    worklist = event.request.AffectedSOPClassUID == WORKLIST
    name = "worklist C-FIND" if worklist else "C-FIND"
    peer = event.assoc.requestor.ae_title.strip()
    hook = server.plugins.hook.handle_worklist_find if worklist else \
        server.plugins.hook.handle_c_find
    try:
        request = _filtered(event, server)
        answers = hook(server=server, request=request)
        if answers is None:
            log.warning("%s from %s refused: no plugin answers it", name, peer)
            yield SOP_CLASS_NOT_SUPPORTED, None
            return
        yield from _pending(answers, request, f"{name} from {peer}")
    except BadRequest as exc:
        log.warning("%s from %s refused: %s", name, peer, exc)
        yield failure_status(IDENTIFIER_DOES_NOT_MATCH, exc), None
    except Rejected as exc:
        log.warning("%s from %s refused: %s", name, peer, exc)
        yield failure_status(UNABLE_TO_PROCESS, exc), None
    except Exception:  # a plugin's failure is a failure status, never a dropped association
        log.exception("%s from %s failed", name, peer)
        yield UNABLE_TO_PROCESS, None


def _filtered(event: Event, server: Server) -> DimseRequest:
    """The request once every ``filter_find_request`` has seen it: they may change the
    identifier in place (its level is then read again), and a ``False`` refuses it."""
    limits = (int(server.config["LimitFindResults"]), int(server.config["LimitFindInstances"]))
    request = dimse_request(event, limits=limits)
    filters = server.plugins.hook.filter_find_request
    if not filters.get_hookimpls():
        return request
    if not all(filters(server=server, request=request)):
        raise Rejected("a plugin refused this query")
    return dimse_request(event, limits=limits, identifier=request.identifier)


def _pending(answers: Iterable[Dataset], request: DimseRequest, what: str) -> Iterator[Response]:
    sent = 0
    for answer in answers:
        if request.is_cancelled():
            log.info("%s cancelled after %d answers", what, sent)
            yield CANCEL, None
            return
        if request.limit and sent == request.limit:
            log.warning("%s: more than %d matches, only the first %d are sent "
                        "(LimitFindResults / LimitFindInstances)", what, sent, sent)
            yield CANCEL, None
            return
        yield PENDING, answer
        sent += 1
    log.info("%s: %d answers", what, sent)


# -- the core's answer ---------------------------------------------------------------


def core_find(server: Server, request: DimseRequest) -> Iterator[Dataset]:
    """Matches from the query engine, each with the return keys the identifier asks for."""
    level = request.level
    assert level is not None, "the listener sets the level of every query/retrieve request"
    asked = keys(request.identifier)
    limit = request.limit + 1 if request.limit else 0  # one more tells the listener to stop
    query = build_query(level, matching(asked), main_tags=server.main_tags,
                        case_sensitive_pn=bool(server.config["CaseSensitivePN"]), limit=limit)
    syntax = UID(request.transfer_syntax)
    answers = _Answers([(element, asked_vr(element)) for element in asked],
                       [(QUERY_RETRIEVE_LEVEL, "CS", str(request.identifier.QueryRetrieveLevel)),
                        (RETRIEVE_AE_TITLE, "AE", str(server.config["DicomAet"]))],
                       CHARACTER_SETS.get(server.config["DefaultEncoding"], UTF8),
                       (syntax.is_implicit_VR, syntax.is_little_endian))
    for values in requested_values(server, server.index.find(query), level, asked):
        yield answers.answer(values)


@dataclass(frozen=True)
class _Answers:
    """Builds the answers of one C-FIND. The index's strings go in as raw elements,
    encoded here in the association's syntax and the answer's character set, which
    pydicom then writes as they are: building typed elements and encoding them took
    two thirds of an answer's CPU."""

    asked: list[tuple[DataElement, str]]  # each asked element and its VR
    common: list[tuple[int, str, str]]  # tag, VR and value of elements every answer has
    preferred: str  # the character set used unless a value needs UTF-8
    encoding: tuple[bool, bool]  # implicit VR, little endian

    def answer(self, values: list[Value]) -> Dataset:
        term = self.preferred if self._writable(values, self.preferred) else UTF8
        codec = python_encoding[term]
        answer = Dataset()
        answer.set_original_encoding(*self.encoding, convert_encodings(term))
        for (element, vr), value in zip(self.asked, values, strict=True):
            if isinstance(value, str) and vr in STRING_VRS:
                answer[element.tag] = self._raw(element.tag, vr, value, codec)
            else:
                answer.add(typed_element(element, vr, value))
        for tag, vr, text in [*self.common, (SPECIFIC_CHARACTER_SET, "CS", term)]:
            answer[tag] = self._raw(tag, vr, text, codec)
        return answer

    def _raw(self, tag: int, vr: str, text: str, codec: str) -> RawDataElement:
        data = text.encode(codec)
        if len(data) % 2:
            data += b"\0" if vr == "UI" else b" "
        return RawDataElement(BaseTag(tag), vr, len(data), data, 0, *self.encoding)

    def _writable(self, values: list[Value], term: str) -> bool:
        """Whether every text value can be written in the character set ``term``."""
        codec = python_encoding[term]
        try:
            for (_, vr), value in zip(self.asked, values, strict=True):
                for text in _texts(value, vr):
                    text.encode(codec)
        except UnicodeEncodeError:
            return False
        return True


def _texts(value: Value, vr: str) -> Iterator[str]:
    """The strings of a value that a character set encodes: an index string of any
    string VR, and the text values of an element from a header (sequences included)."""
    if isinstance(value, str):
        if vr in STRING_VRS:
            yield value
        return
    if value is None:
        return
    elements = [e for item in value.value or [] for e in item.iterall()] \
        if value.VR == "SQ" else [value]
    for element in elements:
        if element.VR in TEXT_VRS and element.value is not None:
            listed = element.value if isinstance(element.value, MultiValue) else [element.value]
            yield from (str(v) for v in listed)
