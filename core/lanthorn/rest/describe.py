"""Resource descriptions in Orthanc's JSON shapes, shared by every listing and finder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import BadRequest
from ..index.records import ResourceInfo
from ..index.sql import orthanc_date
from ..ingest import DICOM_ATTACHMENT
from ..model import Level, format_tag, parse_tag, tag_name
from ..requested import requested_tags

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
    with server.index.read():  # one transaction for the resources and what they repeat
        infos = server.index.describe(ids)
        patient_tags = _patient_tags(server, infos)
        return [_describe(server, info, form, requested, patient_tags) for info in infos]


def _patient_tags(server: Server, infos: list[ResourceInfo]) -> dict[int, dict[int, str]]:
    """The patients' main tags that study descriptions repeat (one query for all)."""
    patients = {i.resource.parent_id for i in infos if i.resource.level == Level.STUDY}
    return server.index.main_tags_of_many(list(patients)) if patients else {}


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
        values = requested_tags(server, resource.id, resource.level, requested)
        result["RequestedTags"] = tags_json(values, form)
    return result


def _own_tags(server: Server, info: ResourceInfo) -> dict[int, str]:
    """A resource keeps only its own level's main tags (a study does not show PatientID)."""
    own = server.main_tags.by_level[info.resource.level]
    return {t: v for t, v in info.main_tags.items() if t in own}


# -- requested tags ------------------------------------------------------------------


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
