"""Small routes of the core: UIDs, clocks, DICOM settings, log levels, modules, slices.

Everything here answers from the configuration, the DICOM listener's own settings or
the index (main tags and stored headers): no stored file is read.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid
from pynetdicom.sop_class import uid_to_service_class
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import __version__
from ..config import ConfigError
from ..dicom import dataset_json
from ..dimse.find import CHARACTER_SETS
from ..dimse.scp import (
    listener_setting,
    make_application_entity,
    matching_syntaxes,
    set_listener_setting,
)
from ..errors import BadRequest, UnknownResource
from ..index.records import Resource, ResourceInfo
from ..model import MODULE_TAGS, Level, parse_tag
from ..reconstruct import reconstruct, reconstruct_all
from ..requested import first_header
from ..types import PluginRoute, permitted
from .common import (
    answer,
    dicom_form,
    integer,
    json_body,
    level_of,
    resource_of,
    server_of,
    text,
)
from .resources import LEVELS

if TYPE_CHECKING:
    from ..index.sql import SqlIndex

#: Orthanc's verbosities as Python log levels.
VERBOSITY = {"default": logging.WARNING, "verbose": logging.INFO, "trace": logging.DEBUG}
#: Orthanc's log categories and the Python loggers behind them ("" is the global level).
LOG_CATEGORIES = {
    "": ("",),
    "generic": ("lanthorn",),
    "http": ("uvicorn", "uvicorn.error", "lanthorn.rest"),
    "dicom": ("pynetdicom", "lanthorn.dimse"),
    "sqlite": ("sqlalchemy", "lanthorn.index"),
    "plugins": ("lanthorn.plugins",),
    "jobs": ("lanthorn.jobs",),
    "lua": ("lanthorn_lua",),
}
ORTHANC_TIME = "%Y%m%dT%H%M%S"
STORAGE = "Storage"
POSITION, ORIENTATION = parse_tag("ImagePositionPatient"), parse_tag("ImageOrientationPatient")
INSTANCE_NUMBER, NUMBER_OF_FRAMES = parse_tag("InstanceNumber"), parse_tag("NumberOfFrames")


# -- identifiers, clocks and DICOM settings ----------------------------------------------

def new_uid(request: Request) -> Response:
    """A new identifier for ``?level=``: a UUID for a patient (a PatientID), else a UID."""
    try:
        level = Level.parse(request.query_params.get("level", ""))
    except ValueError:
        raise BadRequest('"level" must be patient, study, series or instance') from None
    return text(str(uuid.uuid4()) if level == Level.PATIENT else generate_uid())


def now(request: Request) -> Response:
    return text(datetime.now(UTC).strftime(ORTHANC_TIME))


def now_local(request: Request) -> Response:
    return text(datetime.now().strftime(ORTHANC_TIME))


def default_encoding(request: Request) -> Response:
    return text(server_of(request).config["DefaultEncoding"])


async def put_default_encoding(request: Request) -> Response:
    """Only this process changes, until it restarts (as ``log-level``)."""
    server = server_of(request)
    encoding = (await request.body()).decode(errors="replace").strip()
    if encoding not in CHARACTER_SETS:
        raise BadRequest(f'the encoding must be one of {", ".join(CHARACTER_SETS)}, '
                         f'not "{encoding}"')
    server.config = server.config.with_overrides(DefaultEncoding=encoding)
    return text(encoding)


def unknown_sop_class_accepted(request: Request) -> Response:
    accepted = listener_setting(server_of(request), "UnknownSopClassAccepted")
    return text("1" if accepted else "0")


async def set_unknown_sop_class_accepted(request: Request) -> Response:
    """Orthanc's body: "1"/"0" or "true"/"false"; every process applies it at once."""
    value = (await request.body()).decode(errors="replace").strip().lower()
    if value not in ("1", "0", "true", "false"):
        raise BadRequest('the body must be "1", "0", "true" or "false"')
    await run_in_threadpool(set_listener_setting, server_of(request),
                            "UnknownSopClassAccepted", value in ("1", "true"))
    return text("")


async def set_accepted_transfer_syntaxes(request: Request) -> Response:
    """A list of transfer syntax UIDs (``*``/``?`` wildcards) or one; the answer is
    the syntaxes accepted from now on."""
    patterns = json_body(await request.body())
    patterns = [patterns] if isinstance(patterns, str) else patterns
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise BadRequest("the body must be a list of transfer syntax UIDs")
    try:
        matching_syntaxes(patterns)
    except ConfigError as exc:
        raise BadRequest(str(exc)) from None
    server = server_of(request)
    await run_in_threadpool(set_listener_setting, server, "AcceptedTransferSyntaxes", patterns)
    return accepted_transfer_syntaxes(request)


def accepted_transfer_syntaxes(request: Request) -> Response:
    """The transfer syntaxes the DICOM listener accepts for C-STORE, in UID order."""
    return answer(_services(request)[STORAGE][1])


def accepted_sop_classes(request: Request) -> Response:
    """The SOP classes the DICOM listener stores."""
    return answer(_services(request)[STORAGE][0])


def dicom_conformance(request: Request) -> Response:
    """What the DICOM listener offers, as text (built from the listener's own settings)."""
    config = server_of(request).config
    lines = [f"DICOM conformance statement of Lanthorn {__version__}", "",
             f"Application entity {config['DicomAet']}, port {config['DicomPort']}."]
    for service, (sop_classes, syntaxes) in sorted(_services(request).items()):
        lines += ["", f"{service} SCP: SOP classes", ""]
        lines += [f"  {UID(uid).name:<60} | {uid}" for uid in sop_classes]
        lines += ["", f"{service} SCP: transfer syntaxes", ""]
        lines += [f"  {UID(uid).name:<60} | {uid}" for uid in syntaxes]
    return text("\n".join(lines) + "\n")


def _services(request: Request) -> dict[str, tuple[list[str], list[str]]]:
    """The listener's SOP classes and transfer syntaxes, by service ("Storage"...)."""
    found: dict[str, tuple[set[str], set[str]]] = defaultdict(lambda: (set(), set()))
    for context in make_application_entity(server_of(request)).supported_contexts:
        uid = str(context.abstract_syntax)
        sop_classes, syntaxes = found[uid_to_service_class(uid).__name__.removesuffix(
            "ServiceClass")]
        sop_classes.add(uid)
        syntaxes.update(context.transfer_syntax)
    return {service: (sorted(c, key=_uid_order), sorted(s, key=_uid_order))
            for service, (c, s) in found.items()}


def _uid_order(uid: str) -> tuple[int, ...]:
    return tuple(int(part) for part in uid.split("."))


def tools(request: Request) -> Response:
    """The operations under ``/tools/``, as the routes of this server register them."""
    paths = {route.path for route in request.app.routes if isinstance(route, Route)}
    return answer(sorted({p.removeprefix("/tools/") for p in paths
                          if p.startswith("/tools/") and "{" not in p}
                         | {f"log-level-{c}" for c in LOG_CATEGORIES if c}))


# -- log levels -----------------------------------------------------------------------

def get_log_level(request: Request) -> Response:
    level = logging.getLogger(LOG_CATEGORIES[_category(request)][0]).getEffectiveLevel()
    return text(next((v for v, at in reversed(VERBOSITY.items()) if level <= at), "default"))


async def put_log_level(request: Request) -> Response:
    """Only this process changes: with ``Workers``, the other workers keep their level."""
    category = _category(request)
    verbosity = (await request.body()).decode(errors="replace").strip()
    if verbosity not in VERBOSITY:
        raise BadRequest(f'the log level must be one of {", ".join(VERBOSITY)}, '
                         f'not "{verbosity}"')
    for name in LOG_CATEGORIES[category]:
        logging.getLogger(name).setLevel(VERBOSITY[verbosity])
    if category == "":  # as `lanthorn serve` starts: Lanthorn's own notices stay visible
        logging.getLogger("lanthorn").setLevel(min(VERBOSITY[verbosity], logging.INFO))
    return text("")


def _category(request: Request) -> str:
    category = request.path_params.get("category", "")
    if category not in LOG_CATEGORIES:
        raise UnknownResource(f'no log category "{category}"')
    return category


# -- reconstruction ----------------------------------------------------------------------

async def reconstruct_resource(request: Request) -> Response:
    """Re-read the resource's files; the index takes its main tags from them again."""
    files = await _reconstruct_files(request)
    resource = resource_of(request)
    await run_in_threadpool(reconstruct, server_of(request), resource.id, files=files)
    return text("")


async def reconstruct_everything(request: Request) -> Response:
    """All the instances, patient by patient (long: Orthanc advises its housekeeper)."""
    files = await _reconstruct_files(request)
    await run_in_threadpool(reconstruct_all, server_of(request), files=files)
    return text("")


async def _reconstruct_files(request: Request) -> bool:
    data = await request.body()
    body = json_body(data) if data.strip() else {}
    files = body.get("ReconstructFiles", False) if isinstance(body, dict) else None
    if not isinstance(files, bool):
        raise BadRequest('the body must be a JSON object; "ReconstructFiles" a boolean')
    return files


# -- modules, frames and slices ---------------------------------------------------------

def module(request: Request) -> Response:
    """The attributes of the resource's DICOM module, from its first instance's header."""
    return _module(request, resource_of(request).id, level_of(request))


def module_patient(request: Request) -> Response:
    return _module(request, resource_of(request, Level.STUDY).id, Level.PATIENT)


def _module(request: Request, resource_id: int, level: Level) -> Response:
    header = first_header(server_of(request), resource_id)
    if header is None:
        raise UnknownResource("this resource has no instance")
    module = Dataset()
    for tag in MODULE_TAGS[level]:
        if tag in header:
            module[tag] = header[tag]
    return answer(dataset_json(module, dicom_form(request)))


def frames(request: Request) -> Response:
    instance = resource_of(request, Level.INSTANCE)
    return answer(list(range(_frame_count(server_of(request).index.main_tags_of(instance.id)))))


@dataclass(frozen=True)
class Slice:
    resource: Resource
    frames: int
    number: float  # InstanceNumber; +inf when missing
    position: tuple[float, ...] | None
    normal: tuple[float, float, float] | None


def ordered_slices(request: Request) -> Response:
    """The instances of a series in space (a "Volume": by position along the normal of
    their common orientation) or, failing that, by InstanceNumber (a "Sequence")."""
    ordered, volume = _ordered(server_of(request).index, resource_of(request, Level.SERIES).id)
    return answer({
        "Dicom": [f"/instances/{s.resource.public_id}/file" for s in ordered],
        "Slices": [f"/instances/{s.resource.public_id}/frames/{f}" for s in ordered
                   for f in range(s.frames)],
        "SlicesShort": [[s.resource.public_id, 0, s.frames] for s in ordered],
        "Type": "Volume" if volume else "Sequence",
    })


def _ordered(index: SqlIndex, series_id: int) -> tuple[list[Slice], bool]:
    """The slices of a series in order, and whether they make a volume."""
    ids = index.descendants(series_id, Level.INSTANCE)
    slices = [_slice(info) for start in range(0, len(ids), index.ID_BATCH)
              for info in index.describe(ids[start:start + index.ID_BATCH])]
    volume = _volume(slices)
    return volume or sorted(slices, key=lambda s: s.number), volume is not None


def ordered_instances(index: SqlIndex, series_id: int) -> list[Resource]:
    """The instances of a series in the order of ``ordered-slices`` (``/series/{id}/numpy``)."""
    return [s.resource for s in _ordered(index, series_id)[0]]


def _slice(info: ResourceInfo) -> Slice:
    tags = info.main_tags
    position, orientation = _numbers(tags.get(POSITION), 3), _numbers(tags.get(ORIENTATION), 6)
    normal = None
    if orientation:
        (a, b, c), (d, e, f) = orientation[:3], orientation[3:]
        normal = (b * f - c * e, c * d - a * f, a * e - b * d)
    number = _numbers(tags.get(INSTANCE_NUMBER), 1)
    return Slice(info.resource, _frame_count(tags), number[0] if number else math.inf,
                 position, normal)


def _volume(slices: list[Slice]) -> list[Slice] | None:
    """Slices sorted by position along a common normal; None when that is not possible."""
    normal = slices[0].normal if len(slices) > 1 else None
    if normal is None or any(s.position is None or s.normal is None
                             or abs(_dot(s.normal, normal)) < 1 - 1e-3 for s in slices):
        return None
    distances = [_dot(s.position, normal) for s in slices]  # type: ignore[arg-type]
    if len({round(d, 6) for d in distances}) < len(slices):
        return None  # two slices at one place: not a volume
    return [s for _, s in sorted(zip(distances, slices, strict=True), key=lambda p: p[0])]


def _numbers(value: str | None, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in (value or "").split("\\"))
    except ValueError:
        return None
    return numbers if len(numbers) == count and all(map(math.isfinite, numbers)) else None


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _frame_count(tags: dict[int, str]) -> int:
    value = tags.get(NUMBER_OF_FRAMES, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else 1


def exports(request: Request) -> Response:
    """Instances sent to modalities or peers (recorded with ``LogExportedResources``)."""
    since, limit = integer(request, "since"), integer(request, "limit", 100) or 100
    found = server_of(request).index.exports(since, limit + 1)
    last = found[:limit][-1]["Seq"] if found[:limit] else since
    return answer({"Exports": found[:limit], "Done": len(found) <= limit, "Last": last})


def clear_exports(request: Request) -> Response:
    server_of(request).index.clear_exports()
    return answer({})


def routes() -> list[PluginRoute]:
    log_paths = ("/tools/log-level", "/tools/log-level-{category}")
    return [
        *permitted(
            "read",
            Route("/tools", tools, methods=["GET"]),
            Route("/tools/generate-uid", new_uid, methods=["GET"]),
            Route("/tools/now", now, methods=["GET"]),
            Route("/tools/now-local", now_local, methods=["GET"]),
            Route("/tools/default-encoding", default_encoding, methods=["GET"]),
            Route("/tools/accepted-transfer-syntaxes", accepted_transfer_syntaxes,
                  methods=["GET"]),
            Route("/tools/accepted-sop-classes", accepted_sop_classes, methods=["GET"]),
            Route("/tools/unknown-sop-class-accepted", unknown_sop_class_accepted,
                  methods=["GET"]),
            Route("/tools/dicom-conformance", dicom_conformance, methods=["GET"]),
            *(Route(path, get_log_level, methods=["GET"]) for path in log_paths),
            Route(f"/{LEVELS}/{{id}}/module", module, methods=["GET"]),
            Route("/studies/{id}/module-patient", module_patient, methods=["GET"]),
            Route("/instances/{id}/frames", frames, methods=["GET"]),
            Route("/series/{id}/ordered-slices", ordered_slices, methods=["GET"]),
            Route("/exports", exports, methods=["GET"])),
        *permitted(
            "write",
            Route("/tools/default-encoding", put_default_encoding, methods=["PUT"]),
            Route(f"/{LEVELS}/{{id}}/reconstruct", reconstruct_resource, methods=["POST"]),
            Route("/tools/reconstruct", reconstruct_everything, methods=["POST"])),
        *permitted(
            "admin",
            Route("/tools/unknown-sop-class-accepted", set_unknown_sop_class_accepted,
                  methods=["PUT"]),
            Route("/tools/accepted-transfer-syntaxes", set_accepted_transfer_syntaxes,
                  methods=["PUT"]),
            *(Route(path, put_log_level, methods=["PUT"]) for path in log_paths),
            Route("/exports", clear_exports, methods=["DELETE"])),
    ]
