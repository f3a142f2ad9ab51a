"""STOW-RS (PS3.18 10.5): store the application/dicom parts of a multipart request.

The body is parsed as it arrives; each complete part goes through the core's one
ingest path at once, so good parts are stored whatever happens to the others, and
every part is accounted for in the answer: ReferencedSOPSequence for what was stored,
FailedSOPSequence (with a FailureReason) for what was not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydicom.dataset import Dataset
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from lanthorn import BadRequest, LanthornError, Origin, Server
from lanthorn.dicom import parse_instance
from lanthorn.errors import BadFileFormat, Rejected, StorageFull
from lanthorn.redact import phi

from .json_model import dataset_json
from .multipart import PartReader, ReceivedPart, UnsupportedMediaType
from .options import Options
from .resources import base_url, retrieve_url
from .responses import dicom_json

log = logging.getLogger(__name__)

DICOM = "application/dicom"
#: FailureReason values (PS3.18 Table 10.5.3-1 and PS3.4 Annex B).
PROCESSING_FAILURE = 0x0110
REFUSED = 0x0124
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
#: Orthanc's reason when an instance is not of the study the URL names.
STUDY_MISMATCH = PROCESSING_FAILURE


@dataclass(frozen=True)
class Outcome:
    sop_class: str
    sop_instance: str
    study: str = ""
    series: str = ""
    failure: int = 0  # 0: stored


async def store(request: Request, server: Server, options: Options) -> Response:
    reader = PartReader(request.headers.get("content-type", ""))
    if reader.type not in ("", DICOM):
        raise UnsupportedMediaType(f'only type="{DICOM}" parts can be stored, not '
                                   f'"{reader.type}" (the JSON + bulk data form is not '
                                   "supported)")
    expected_study = request.path_params.get("study", "")
    origin = Origin("Plugins", remote_ip=request.client.host if request.client else "")
    outcomes: list[Outcome] = []
    async for block in request.stream():
        for part in reader.feed(block):
            outcomes.append(await run_in_threadpool(_store_part, server, part, origin,
                                                    expected_study))
    if not reader.finished:
        if not outcomes:
            raise BadRequest("the body has no complete part delimited by the boundary of "
                             "its Content-Type (or it was cut short)")
        outcomes.append(Outcome("", "", failure=CANNOT_UNDERSTAND))
        log.warning("STOW-RS: the body ends inside a part; %d parts before it were handled",
                    len(outcomes) - 1)
    if not outcomes:
        raise BadRequest("the multipart body has no part")
    return _answer(outcomes, base_url(request, options), expected_study)


def _store_part(server: Server, part: ReceivedPart, origin: Origin, expected_study: str
                ) -> Outcome:
    """Store one part; any refusal becomes a FailureReason, never an exception."""
    media_type = part.content_type.split(";")[0].strip().lower()
    if media_type not in ("", DICOM):
        log.warning("STOW-RS: a part of type %r is not %s", media_type, DICOM)
        return Outcome("", "", failure=CANNOT_UNDERSTAND)
    try:
        parsed = parse_instance(bytes(part.data))
    except BadFileFormat as exc:
        log.warning("STOW-RS: a part is not a DICOM file: %s", exc)
        return Outcome("", "", failure=CANNOT_UNDERSTAND)
    _, study, series, sop = parsed.uids
    described = Outcome(parsed.sop_class, sop, study, series)
    if expected_study and study != expected_study:
        log.warning("STOW-RS: instance %s belongs to study %s, not %s", phi(sop), phi(study),
                    phi(expected_study))
        return Outcome(parsed.sop_class, sop, failure=STUDY_MISMATCH)
    try:
        server.ingest.store_parsed(parsed, origin)
    except LanthornError as exc:
        log.warning("STOW-RS: instance %s was not stored: %s", phi(sop), exc)
        return Outcome(parsed.sop_class, sop, failure=_reason(exc))
    return described


def _reason(exc: LanthornError) -> int:
    if isinstance(exc, Rejected):
        return REFUSED
    if isinstance(exc, StorageFull):
        return OUT_OF_RESOURCES
    if isinstance(exc, BadFileFormat):
        return CANNOT_UNDERSTAND
    return PROCESSING_FAILURE


def _answer(outcomes: list[Outcome], base: str, expected_study: str) -> Response:
    """200: all stored; 202: some stored; 409: none stored (PS3.18 10.5.3)."""
    response = Dataset()
    stored = [o for o in outcomes if not o.failure]
    failed = [o for o in outcomes if o.failure]
    studies = {o.study for o in stored}
    if expected_study or len(studies) == 1:
        response.RetrieveURL = retrieve_url(base, expected_study or studies.pop())
    response.FailedSOPSequence = [_item(o) for o in failed]
    response.ReferencedSOPSequence = [_item(o, base) for o in stored]
    status = 409 if not stored else 202 if failed else 200
    return dicom_json(dataset_json(response, lambda path: ""), status)


def _item(outcome: Outcome, base: str = "") -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = outcome.sop_class
    item.ReferencedSOPInstanceUID = outcome.sop_instance
    if outcome.failure:
        item.FailureReason = outcome.failure
    else:
        item.RetrieveURL = retrieve_url(base, outcome.study, outcome.series,
                                        outcome.sop_instance)
    return item
