"""Splitting a study and merging resources into one: modifications at the study level.

Both build a ``modify.ModifyRequest`` and let ``modify.run`` do the work (new UIDs, the
one ingest path, ``ModifiedFrom``, ``KeepSource``), as Orthanc's /split and /merge do:

- split: the given series or instances of a study go to a new study (new Study, Series
  and SOP Instance UIDs); ``Replace`` / ``Remove`` may change patient and study module
  attributes only, identifiers included;
- merge: the given studies, series or instances take the target study's patient and
  study module attributes (its StudyInstanceUID included) and new Series and SOP Instance
  UIDs; attributes of these modules the target lacks are removed.

``KeepSource`` is false by default: the originals are deleted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import modify
from .dicom import dataset_json
from .errors import BadRequest, UnknownResource
from .index.records import Resource
from .model import MODULE_TAGS, Level, format_tag, parse_tag, tag_name
from .requested import first_header
from .types import Origin

if TYPE_CHECKING:
    from .server import Server

STUDY_INSTANCE_UID = parse_tag("StudyInstanceUID")
#: What split may change, and what merge copies from the target study.
SHARED_TAGS = frozenset(MODULE_TAGS[Level.PATIENT]) | frozenset(MODULE_TAGS[Level.STUDY])


def parse_split(server: Server, study: Resource, body: Any,
                origin: Origin) -> modify.ModifyRequest:
    body = _object(body)
    parts = [*_ids(body, "Series"), *_ids(body, "Instances")]
    if not parts:
        raise BadRequest('give the series or instances to split off in "Series" or '
                         '"Instances"')
    for part in parts:
        if _study_of(server, part) != study.id:
            raise BadRequest(f"{part} is not part of the study {study.public_id}")
    replace = modify.parse_replacements(body.get("Replace", {}))
    remove = tuple(modify.parse_path(p) for p in modify.option_list(body, "Remove"))
    for tag in [p.tag for p, _ in replace] + [p.tag for p in remove]:
        if tag not in SHARED_TAGS - {STUDY_INSTANCE_UID}:
            raise BadRequest(f"{tag_name(tag)} ({format_tag(tag)}) is not in the patient or "
                             "study module: a split cannot change it")
    return _request(body, parts, replace, remove, origin)


def parse_merge(server: Server, study: Resource, body: Any,
                origin: Origin) -> modify.ModifyRequest:
    body = _object(body)
    resources = _ids(body, "Resources")
    if not resources:
        raise BadRequest('give the resources to merge in "Resources"')
    for public_id in resources:
        if _study_of(server, public_id) == study.id:
            raise BadRequest(f"{public_id} is already part of the study {study.public_id}")
    header = first_header(server, study.id)
    if header is None:
        raise UnknownResource(f"the study {study.public_id} has no instance")
    values = dataset_json(header, "simplify")
    present = {tag for tag in SHARED_TAGS if tag in header}
    replace = modify.parse_replacements(
        {name: values[name] for name in (tag_name(t) for t in present)
         if modify.valid_value(values.get(name))})
    remove = tuple(modify.parse_path(format_tag(t)) for t in sorted(SHARED_TAGS - present)
                   if t != STUDY_INSTANCE_UID)
    return _request(body, resources, replace, remove, origin)


def _request(body: dict[str, Any], resources: list[str], replace: Any, remove: Any,
             origin: Origin) -> modify.ModifyRequest:
    return modify.ModifyRequest(
        level=Level.STUDY, resources=tuple(resources), anonymize=False, replace=replace,
        remove=remove, keep_private_tags=True,
        keep_source=modify.option_flag(body, "KeepSource", False),
        keep_labels=modify.option_flag(body, "KeepLabels", False),
        permissive=modify.option_flag(body, "Permissive", False), origin=origin)


def run(server: Server, request: modify.ModifyRequest, progress: modify.Progress,
        state: dict[str, Any] | None = None, *, split: bool) -> dict[str, Any]:
    """Carry out a split or merge; Orthanc's answer (the new study's UID for a split)."""
    done = modify.run(server, request, progress, state)
    answer = {key: done[key] for key in ("Description", "FailedInstancesCount",
                                         "InstancesCount")}
    answer["TargetStudy"] = done["ID"]
    if split:
        study = server.index.lookup(done["ID"], Level.STUDY)
        answer["TargetStudyUID"] = server.index.main_tags_of(study.id)[STUDY_INSTANCE_UID] \
            if study else None
    return answer


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("The body must contain a JSON object")
    return body


def _ids(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f'"{key}" must be a list of resource IDs')
    return value


def _study_of(server: Server, public_id: str) -> int | None:
    """The study a resource belongs to (None above the study level); 404 if unknown."""
    resource = server.index.lookup(public_id)
    if resource is None:
        raise UnknownResource(f"no resource has the ID {public_id}")
    return next((r.id for r in server.index.ancestors(resource.id) if r.level == Level.STUDY),
                None)
