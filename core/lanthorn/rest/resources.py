"""Patients, studies, series and instances: listing, describing, navigating, deleting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..dicom import dataset_json, read_header
from ..errors import BadFileFormat, BadRequest, UnknownResource
from ..index.records import Resource
from ..model import Level
from ..types import PluginRoute, permitted
from .common import (
    answer,
    dicom_form,
    flag,
    integer,
    json_body,
    level_of,
    resource_of,
    server_of,
    text,
)
from .describe import describe_many, parse_requested

if TYPE_CHECKING:
    from ..server import Server

LEVELS = "{level:lanthorn_level}"
COUNT_KEYS = {Level.PATIENT: "CountPatients", Level.STUDY: "CountStudies",
              Level.SERIES: "CountSeries", Level.INSTANCE: "CountInstances"}


class LevelConvertor(Convertor[str]):
    """Matches the four collection names in ``/{level}/...`` routes."""

    regex = "patients|studies|series|instances"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("lanthorn_level", LevelConvertor())


def tag_form(request: Request) -> str:
    """How tags are keyed in the answer: by keyword, by hex tag, or in full."""
    if flag(request, "full"):
        return "full"
    return "short" if flag(request, "short") else "simplify"


def describe_ids(request: Request, ids: list[int]) -> list[dict]:
    return describe_many(server_of(request), ids, form=tag_form(request),
                         requested=parse_requested(request.query_params.get("requested-tags")))


def list_resources(request: Request) -> Response:
    server, level = server_of(request), level_of(request)
    since, limit = integer(request, "since"), integer(request, "limit")
    found = server.index.list_resources(level, since=since, limit=limit)
    if not flag(request, "expand"):
        return answer([public_id for _, public_id in found])
    return answer(describe_ids(request, [resource_id for resource_id, _ in found]))


def get_resource(request: Request) -> Response:
    return answer(describe_ids(request, [resource_of(request).id])[0])


def delete_resource(request: Request) -> Response:
    server = server_of(request)
    outcome = server.delete(resource_of(request))
    remaining = None
    if outcome.remaining_ancestor:
        level, public_id = outcome.remaining_ancestor
        remaining = {"ID": public_id, "Path": f"/{level.plural}/{public_id}",
                     "Type": level.title}
    return answer({"RemainingAncestor": remaining})


def related(level: Level, target: Level):  # noqa: ANN201 - a Starlette endpoint
    """``/studies/{id}/series``, ``/instances/{id}/patient``...: children or an ancestor."""

    def endpoint(request: Request) -> Response:
        server, resource = server_of(request), resource_of(request, level)
        if target > resource.level:
            ids = server.index.descendants(resource.id, target)
            if not flag(request, "expand", default=True):
                return answer(server.index.public_ids_of(ids))
            return answer(describe_ids(request, ids))
        ancestor = next(r for r in server.index.ancestors(resource.id) if r.level == target)
        return answer(describe_ids(request, [ancestor.id])[0])

    return endpoint


def shared_tags(request: Request) -> Response:
    """Tags with the same value in every instance of the resource (read from headers).

    As in Orthanc, only plain values count: sequences and binary values are left out.
    """
    server, resource = server_of(request), resource_of(request)
    mode = dicom_form(request)
    shared: dict | None = None
    for instance in server.index.descendants(resource.id, Level.INSTANCE):
        tags = dataset_json(read_header(server.index.header(instance)), "full")
        shared = tags if shared is None else {k: v for k, v in shared.items()
                                              if tags.get(k) == v}
    shared = {k: v for k, v in (shared or {}).items()
              if v["Type"] not in ("Sequence", "Null") and not k.startswith("0002,")}
    if mode == "short":
        return answer({k: v["Value"] for k, v in shared.items()})
    if mode == "simplify":
        return answer({v["Name"]: v["Value"] for v in shared.values()})
    return answer(shared)


async def bulk_content(request: Request) -> Response:
    """``POST /tools/bulk-content``: the descriptions of ``Resources`` (or of their
    ancestors or descendants at ``Level``), with their metadata unless ``Metadata``
    is false, in one call."""
    body = json_body(await request.body())
    if not isinstance(body, dict):
        raise BadRequest("The body must contain a JSON object")
    resources, level = body.get("Resources"), body.get("Level")
    if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
        raise BadRequest('"Resources" must be a list of resource IDs')
    try:
        target = None if level is None else Level.parse(str(level))
    except ValueError:
        raise BadRequest('"Level" must be Patient, Study, Series or Instance') from None
    form = "full" if body.get("Full") is True else "short" if body.get("Short") is True \
        else "simplify"
    return answer(await run_in_threadpool(_bulk_content, server_of(request), resources, target,
                                          form, body.get("Metadata", True) is not False))


def _bulk_content(server: Server, public_ids: list[str], level: Level | None, form: str,
                  with_metadata: bool) -> list[dict[str, Any]]:
    ids: dict[int, None] = {}
    for public_id in public_ids:
        resource = server.index.lookup(public_id)
        if resource is None:
            raise UnknownResource(f"no resource has the ID {public_id}")
        at = resource.level if level is None else level
        ids.update(dict.fromkeys(_at_level(server, resource, at)))
    found = describe_many(server, list(ids), form=form)
    if with_metadata:
        for description, resource_id in zip(found, ids, strict=True):
            description["Metadata"] = server.index.metadata(resource_id)
    return found


def _at_level(server: Server, resource: Resource, level: Level) -> list[int]:
    """The resource's ancestor at ``level``, or its descendants there."""
    if level < resource.level:
        return [next(r.id for r in server.index.ancestors(resource.id) if r.level == level)]
    return server.index.descendants(resource.id, level)


def statistics(request: Request) -> Response:
    server, resource = server_of(request), resource_of(request)
    stats = server.index.statistics(resource.id)
    body: dict = {COUNT_KEYS[level]: count for level, count in stats.count_by_level.items()}
    for prefix in ("", "Dicom"):
        body[f"{prefix}DiskSize"] = str(stats.disk_size)
        body[f"{prefix}DiskSizeMB"] = stats.disk_size // (1024 * 1024)
        body[f"{prefix}UncompressedSize"] = str(stats.uncompressed_size)
        body[f"{prefix}UncompressedSizeMB"] = stats.uncompressed_size // (1024 * 1024)
    return answer(body)


def protected(request: Request) -> Response:
    return text("1" if resource_of(request, Level.PATIENT).protected else "0")


async def put_protected(request: Request) -> Response:
    """Protect a patient from recycling (``1``/``true``) or not (``0``/``false``)."""
    value = (await request.body()).decode(errors="replace").strip().lower()
    if value not in ("0", "1", "true", "false"):
        raise BadFileFormat("Boolean value expected")
    await run_in_threadpool(server_of(request).index.set_protected,
                            resource_of(request, Level.PATIENT), value in ("1", "true"))
    return text("")


def routes() -> list[PluginRoute]:
    nav = [
        Route(f"/{level.plural}/{{id}}/{target.plural if target > level else target.name.lower()}",
              related(level, target), methods=["GET"])
        for level in Level for target in Level if target != level
    ]
    return [
        *permitted("read",
                   Route(f"/{LEVELS}", list_resources, methods=["GET"]),
                   Route(f"/{LEVELS}/{{id}}", get_resource, methods=["GET"]),
                   Route(f"/{LEVELS}/{{id}}/shared-tags", shared_tags, methods=["GET"]),
                   Route(f"/{LEVELS}/{{id}}/statistics", statistics, methods=["GET"]),
                   Route("/patients/{id}/protected", protected, methods=["GET"]),
                   *nav),
        *permitted("write",
                   Route(f"/{LEVELS}/{{id}}", delete_resource, methods=["DELETE"]),
                   Route("/tools/bulk-content", bulk_content, methods=["POST"]),
                   Route("/patients/{id}/protected", put_protected, methods=["PUT"])),
    ]
