"""Resource descriptions in Orthanc's JSON shapes, shared by every listing and finder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..dicom import element_string, read_header
from ..errors import BadRequest
from ..index.records import ResourceInfo
from ..index.sql import orthanc_date
from ..ingest import DICOM_ATTACHMENT
from ..model import Level, format_tag, parse_tag, tag_name
from ..query import MODALITY

if TYPE_CHECKING:
    from ..server import Server

CHILD_KEYS = {Level.PATIENT: "Studies", Level.STUDY: "Series", Level.SERIES: "Instances"}
PARENT_KEYS = {Level.STUDY: "ParentPatient", Level.SERIES: "ParentStudy",
               Level.INSTANCE: "ParentSeries"}


def tags_json(tags: dict[int, str], form: str = "simplify") -> dict[str, Any]:
    """Main tags by keyword (default), by hex tag (``short``) or in ``full`` form."""
    if form == "short":
        return {format_tag(t): v for t, v in sorted(tags.items())}
    if form == "full":
        return {format_tag(t): {"Name": tag_name(t), "Type": "String", "Value": v}
                for t, v in sorted(tags.items())}
    return dict(sorted((tag_name(t), v) for t, v in tags.items()))


def describe_many(server: Server, ids: Sequence[int], *, form: str = "simplify",
                  requested: Sequence[int] = ()) -> list[dict[str, Any]]:
    infos = server.index.describe(ids)
    patient_tags = _patient_tags(server, infos)
    return [_describe(server, info, form, requested, patient_tags) for info in infos]


def _patient_tags(server: Server, infos: list[ResourceInfo]) -> dict[int, dict[int, str]]:
    """The patients' main tags that study descriptions repeat (one query for all)."""
    patients = {i.resource.parent_id for i in infos if i.resource.level == Level.STUDY}
    return {info.resource.id: info.main_tags for info in server.index.describe(list(patients))}


def _describe(server: Server, info: ResourceInfo, form: str, requested: Sequence[int],
              patient_tags: dict[int, dict[int, str]]) -> dict[str, Any]:
    resource = info.resource
    result: dict[str, Any] = {
        "ID": resource.public_id,
        "Type": resource.level.title,
        "MainDicomTags": tags_json(_own_tags(server, info), form),
        "Labels": info.labels,
    }
    if resource.level in PARENT_KEYS:
        result[PARENT_KEYS[resource.level]] = info.parent_public_id
    if resource.level in CHILD_KEYS:
        result[CHILD_KEYS[resource.level]] = info.children
        result["IsStable"] = resource.is_stable
        result["LastUpdate"] = orthanc_date(resource.last_update)
    if resource.level == Level.STUDY:
        result["PatientMainDicomTags"] = tags_json(patient_tags.get(resource.parent_id, {}), form)
    elif resource.level == Level.SERIES:
        result["ExpectedNumberOfInstances"] = None
        result["Status"] = "Unknown"
    elif resource.level == Level.INSTANCE:
        dicom = info.attachments.get(DICOM_ATTACHMENT)
        result["FileSize"] = dicom.uncompressed_size if dicom else 0
        result["FileUuid"] = dicom.uuid if dicom else None
        index_in_series = info.metadata.get("IndexInSeries")
        result["IndexInSeries"] = int(index_in_series) if index_in_series else None
    if requested:
        result["RequestedTags"] = tags_json(requested_tags(server, info, requested), form)
    return result


def _own_tags(server: Server, info: ResourceInfo) -> dict[int, str]:
    """A resource keeps only its own level's main tags (a study does not show PatientID)."""
    own = server.main_tags.by_level[info.resource.level]
    return {t: v for t, v in info.main_tags.items() if t in own}


# -- requested tags, including Orthanc's computed ones -----------------------------------

COUNT_TAGS = {
    parse_tag("NumberOfPatientRelatedStudies"): (Level.PATIENT, Level.STUDY),
    parse_tag("NumberOfPatientRelatedSeries"): (Level.PATIENT, Level.SERIES),
    parse_tag("NumberOfPatientRelatedInstances"): (Level.PATIENT, Level.INSTANCE),
    parse_tag("NumberOfStudyRelatedSeries"): (Level.STUDY, Level.SERIES),
    parse_tag("NumberOfStudyRelatedInstances"): (Level.STUDY, Level.INSTANCE),
    parse_tag("NumberOfSeriesRelatedInstances"): (Level.SERIES, Level.INSTANCE),
}
MODALITIES_IN_STUDY = parse_tag("ModalitiesInStudy")
SOP_CLASSES_IN_STUDY = parse_tag("SOPClassesInStudy")


def parse_requested(values: Sequence[str] | str | None) -> list[int]:
    """``requested-tags=A;B`` or a JSON list of keywords / tags."""
    if not values:
        return []
    items = values.split(";") if isinstance(values, str) else values
    if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
        raise BadRequest("the requested tags must be a list of tag names")
    try:
        return [parse_tag(v) for v in items if v]
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def requested_tags(server: Server, info: ResourceInfo, tags: Sequence[int]) -> dict[int, str]:
    """Values of the requested tags: stored, computed from the hierarchy, or from a header."""
    index, resource = server.index, info.resource
    chain = {r.level: r.id for r in index.ancestors(resource.id)}
    values: dict[int, str] = {}
    header_tags = []
    for tag in tags:
        level = server.main_tags.level_of(tag)
        if tag in COUNT_TAGS and COUNT_TAGS[tag][0] == resource.level:
            values[tag] = str(len(index.descendants(resource.id, COUNT_TAGS[tag][1])))
        elif tag == MODALITIES_IN_STUDY and resource.level == Level.STUDY:
            series = index.describe(index.descendants(resource.id, Level.SERIES))
            modalities = {s.main_tags.get(MODALITY, "") for s in series} - {""}
            values[tag] = "\\".join(sorted(modalities))
        elif tag == SOP_CLASSES_IN_STUDY and resource.level == Level.STUDY:
            instances = index.describe(index.descendants(resource.id, Level.INSTANCE))
            values[tag] = "\\".join(sorted({i.metadata.get("SopClassUid", "") for i in instances}
                                           - {""}))
        elif level is not None and level <= resource.level:
            found = index.main_tags_of(chain[level]).get(tag)
            if found is not None:
                values[tag] = found
        else:
            header_tags.append(tag)
    if header_tags:
        instances = index.descendants(resource.id, Level.INSTANCE)
        if instances:
            dataset = read_header(index.header(instances[0]))
            for tag in header_tags:
                if tag in dataset:
                    values[tag] = element_string(dataset[tag]) or ""
    return values

