"""STOW-RS (PS3.18 10.5): store the instances of a multipart request.

The body is parsed as it arrives. Each complete application/dicom part goes through the
core's one ingest path at once; application/dicom+json parts (a dataset or an array of
them) wait for the end of the body, as their bulk data (parts named by their
``Content-Location``) may come after them, and are then written as DICOM files that
take the same path. Good instances are stored whatever happens to the others, and
every one is accounted for in the answer: ReferencedSOPSequence for what was stored,
FailedSOPSequence (with a FailureReason) for what was not.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian
from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from lanthorn import BadRequest, LanthornError, Origin, Server
from lanthorn.dicom import parse_instance
from lanthorn.errors import BadFileFormat, Rejected, StorageFull
from lanthorn.redact import phi
from lanthorn.transcode import write

from .json_model import PIXEL_DATA, dataset_json
from .multipart import PartReader, ReceivedPart, UnsupportedMediaType
from .options import Options
from .resources import base_url, retrieve_url
from .responses import DICOM_JSON, dicom_json

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
    if reader.type not in ("", DICOM, DICOM_JSON):
        raise UnsupportedMediaType(f'only type="{DICOM}" or "{DICOM_JSON}" parts can be '
                                   f'stored, not "{reader.type}"')
    expected_study = request.path_params.get("study", "")
    origin = Origin("Plugins", remote_ip=request.client.host if request.client else "")
    outcomes: list[Outcome] = []
    metadata: list[ReceivedPart] = []
    bulk: dict[str, ReceivedPart] = {}
    async for block in request.stream():
        for part in reader.feed(block):
            kind = _media_type(part)
            if kind == DICOM_JSON:
                metadata.append(part)
            elif kind not in ("", DICOM) and "content-location" in part.headers:
                bulk[part.headers["content-location"]] = part
            else:
                outcomes.append(await run_in_threadpool(_store_part, server, part, origin,
                                                        expected_study))
    for part in metadata:
        outcomes += await run_in_threadpool(_store_json, server, part, bulk, origin,
                                            expected_study)
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


def _media_type(part: ReceivedPart) -> str:
    return part.content_type.split(";")[0].strip().lower()


def _store_part(server: Server, part: ReceivedPart, origin: Origin, expected_study: str
                ) -> Outcome:
    """Store one application/dicom part; any refusal becomes a FailureReason."""
    if _media_type(part) not in ("", DICOM):
        log.warning("STOW-RS: a part of type %r is neither DICOM nor bulk data named by a "
                    "Content-Location", _media_type(part))
        return Outcome("", "", failure=CANNOT_UNDERSTAND)
    return _store_file(server, bytes(part.data), origin, expected_study)


def _store_json(server: Server, part: ReceivedPart, bulk: dict[str, ReceivedPart],
                origin: Origin, expected_study: str) -> list[Outcome]:
    """Store the datasets of an application/dicom+json part (one, or an array)."""
    try:
        items = json.loads(bytes(part.data))
    except ValueError as exc:
        log.warning("STOW-RS: a %s part is not JSON: %s", DICOM_JSON, exc)
        return [Outcome("", "", failure=CANNOT_UNDERSTAND)]
    outcomes = []
    for item in items if isinstance(items, list) else [items]:
        try:
            data = _dicom_file(item, bulk)
        except Exception as exc:  # pydicom's and our own: the dataset cannot be rebuilt
            log.warning("STOW-RS: a dataset of a %s part cannot be read: %s", DICOM_JSON, exc)
            outcomes.append(Outcome(*_uids(item), failure=CANNOT_UNDERSTAND))
            continue
        outcomes.append(_store_file(server, data, origin, expected_study))
    return outcomes


def _dicom_file(item: dict[str, Any], bulk: dict[str, ReceivedPart]) -> bytes:
    """A DICOM file of a DICOM JSON dataset, bulk data read from the parts its
    BulkDataURIs name. The transfer syntax is the one the pixel data part names
    (its frame encapsulated), else Explicit VR Little Endian."""
    syntax = ExplicitVRLittleEndian

    def bulk_value(tag: str, _vr: str, uri: str) -> bytes:
        nonlocal syntax
        if uri not in bulk:
            raise BadFileFormat(f"no part has the Content-Location {uri}")
        part = bulk[uri]
        _, parameters = parse_options_header(part.content_type)
        named = parameters.get(b"transfer-syntax", b"").decode("latin-1")
        if tag.upper() == f"{PIXEL_DATA:08X}" and named and UID(named).is_encapsulated:
            syntax = UID(named)
            return encapsulate([bytes(part.data)])
        return bytes(part.data)

    dataset = Dataset.from_json(item, bulk_data_uri_handler=bulk_value)
    if syntax.is_encapsulated:
        dataset["PixelData"].is_undefined_length = True
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = syntax
    return write(dataset)


def _uids(item: Any) -> tuple[str, str]:
    """SOP class and instance UIDs of a DICOM JSON dataset, as far as they can be read."""
    def value(tag: str) -> str:
        found = item.get(tag, {}).get("Value", [""]) if isinstance(item, dict) else [""]
        return str(found[0]) if isinstance(found, list) and found else ""
    return value("00080016"), value("00080018")


def _store_file(server: Server, data: bytes, origin: Origin, expected_study: str) -> Outcome:
    """Store one DICOM file; any refusal becomes a FailureReason, never an exception."""
    try:
        parsed = parse_instance(data)
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
