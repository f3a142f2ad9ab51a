"""QIDO-RS (PS3.18 10.6): search for studies, series and instances.

A thin adapter: query parameters become a ``lanthorn.query`` query (the one engine that
``/tools/find`` and C-FIND use), and each match is rendered from what the index keeps
(main tags, computed tags, the saved header of its first instance) as DICOM JSON.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from starlette.requests import Request
from starlette.responses import Response

from lanthorn import BadRequest, Level, Server
from lanthorn.dicom import read_header
from lanthorn.model import MAIN_DICOM_TAGS, parse_tag
from lanthorn.query import build_query
from lanthorn.requested import COUNT_TAGS, SOP_CLASSES_IN_STUDY, requested_datasets

from .json_model import PIXEL_DATA, dataset_json
from .options import Options
from .resources import UID_KEYWORDS, base_url, path_uids, retrieve_url
from .responses import dicom_json, require_json

RETRIEVE_URL = 0x00081190
PARAMETERS = ("limit", "offset", "fuzzymatching", "includefield")


def _tags(*keywords: str) -> tuple[int, ...]:
    return tuple(parse_tag(k) for k in keywords)


STUDY_FIELDS = _tags(
    "SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy",
    "ReferringPhysicianName", "TimezoneOffsetFromUTC", "PatientName", "PatientID",
    "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
#: Returned when the client asks for nothing else (PS3.18 Table 10.6.3-3, as Orthanc).
DEFAULT_FIELDS = {
    Level.STUDY: STUDY_FIELDS,
    Level.SERIES: STUDY_FIELDS[:-2] + _tags(
        "Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber",
        "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
        "NumberOfSeriesRelatedInstances"),
    Level.INSTANCE: STUDY_FIELDS[:-2] + _tags(
        "Modality", "SeriesInstanceUID", "SeriesNumber", "SOPClassUID", "SOPInstanceUID",
        "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames"),
}


def search(request: Request, level: Level, server: Server, options: Options) -> Response:
    require_json(request)
    query, include, limit, offset, fuzzy = _parameters(request)
    uids = path_uids(request)
    for keyword, value in uids.items():
        if query.setdefault(keyword, value) != value:
            raise BadRequest(f'{keyword} "{query[keyword]}" contradicts the path ({value})')
    cap = server.config["LimitFindInstances" if level == Level.INSTANCE else "LimitFindResults"]
    if cap and (not limit or limit > cap):
        limit = cap
    engine_query = build_query(level, query, main_tags=server.main_tags,
                               case_sensitive_pn=options.qido_case_sensitive and not fuzzy,
                               limit=limit, since=offset)
    asked = _asked(level, [parse_tag(k) for k in query], include)
    base = base_url(request, options)
    with server.index.read():  # one transaction for the matches and their attributes
        matches = server.index.find(engine_query)
        if level == Level.INSTANCE:
            datasets = _from_headers(server, matches, asked, include == "all")
        else:
            elements = [DataElement(t, _vr(t), None) for t in asked]
            datasets = requested_datasets(server, matches, level, elements)
        return dicom_json([_json(dataset, level, base) for dataset in datasets])


def _parameters(request: Request) -> tuple[dict[str, str], list[int] | str, int, int, bool]:
    """Matching keys, includefield (tags or "all"), limit, offset, fuzzymatching."""
    query: dict[str, str] = {}
    seen: set[int] = set()
    include: list[int] | str = []
    limit = offset = 0
    fuzzy = False
    for key, value in request.query_params.multi_items():
        if key == "includefield":
            names = [n.strip() for n in value.split(",") if n.strip()]
            if "all" in names:
                include = "all"
            elif include != "all":
                include += [_tag(n, "includefield") for n in names]
        elif key in ("limit", "offset"):
            if not value.isdigit():
                raise BadRequest(f'"{key}" must be a non-negative integer, not "{value}"')
            limit, offset = (int(value), offset) if key == "limit" else (limit, int(value))
        elif key == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise BadRequest(f'"fuzzymatching" must be true or false, not "{value}"')
            fuzzy = value.lower() == "true"
        else:
            if "." in key:
                raise BadRequest(f'matching on sequence attributes ("{key}") is not supported')
            tag = _tag(key, "query")
            if tag in seen:
                raise BadRequest(f'the attribute "{key}" is given twice')
            seen.add(tag)
            query[key] = value
    return query, include, limit, offset, fuzzy


def _tag(name: str, what: str) -> int:
    try:
        return parse_tag(name)
    except ValueError:
        known = ", ".join(PARAMETERS)
        raise BadRequest(f'unknown {what} parameter or attribute "{name}" (parameters: '
                         f"{known}; attributes: a keyword or 8 hexadecimal digits)") from None


def _asked(level: Level, matched: list[int], include: list[int] | str) -> list[int]:
    tags = [*DEFAULT_FIELDS[level], *matched]
    if include == "all":
        tags += [t for lv in Level if lv <= level for t in MAIN_DICOM_TAGS[lv]]
        tags += [t for t, (owner, _) in COUNT_TAGS.items() if owner == level]
        if level == Level.STUDY:
            tags.append(SOP_CLASSES_IN_STUDY)
    else:
        tags += include
    return sorted(set(tags) - {RETRIEVE_URL})


def _from_headers(server: Server, instances: list[int], asked: list[int],
                  whole: bool) -> Iterator[Dataset]:
    """Instance results straight from their saved headers (read in batches): an
    instance's own header is the truth about it, and one read answers every field."""
    for start in range(0, len(instances), server.index.ID_BATCH):
        batch = instances[start:start + server.index.ID_BATCH]
        headers = server.index.headers(batch)
        for instance in batch:
            header = read_header(headers[instance])
            header.file_meta = None
            dataset = Dataset()
            for tag in asked:
                dataset.add(header[tag] if tag in header else DataElement(tag, _vr(tag), None))
            if whole:
                for element in header:
                    if element.tag not in dataset and element.tag != PIXEL_DATA:
                        dataset.add(element)
            yield dataset


def _json(dataset: Dataset, level: Level, base: str) -> dict[str, Any]:
    """A result with its RetrieveURL, as DICOM JSON."""
    uids = [str(dataset.get(UID_KEYWORDS[lv], "") or "") for lv in UID_KEYWORDS if lv <= level]
    url = retrieve_url(base, *uids)
    dataset.add_new(RETRIEVE_URL, "UR", url)
    return dataset_json(dataset, lambda path: f"{url}/bulk/{path}")


def _vr(tag: int) -> str:
    return dictionary_VR(tag) if dictionary_has_tag(tag) else "UN"
