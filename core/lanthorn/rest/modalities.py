"""``/modalities``: the remote modalities of ``DicomModalities``, C-ECHO and C-STORE to them.

Modalities come from the configuration only (``DicomModalitiesInDatabase``, and with
it ``PUT``/``DELETE``, comes later). A store runs during the request: asynchronous
stores wait for the jobs engine.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..dimse import scu
from ..dimse.access import Modality, parse_modalities
from ..errors import BadRequest, InexistentItem, UnknownResource
from .common import answer, flag, server_of

if TYPE_CHECKING:
    from ..server import Server


def modality_of(request: Request) -> Modality:
    name = request.path_params["id"]
    found = parse_modalities(server_of(request).config).get(name)
    if found is None:
        raise InexistentItem(f"No modality with symbolic name: {name}")
    return found


def list_modalities(request: Request) -> Response:
    modalities = parse_modalities(server_of(request).config)
    if flag(request, "expand"):
        return answer({name: m.configuration() for name, m in sorted(modalities.items())})
    return answer(sorted(modalities))


def configuration(request: Request) -> Response:
    return answer(modality_of(request).configuration())


async def echo(request: Request) -> Response:
    modality = modality_of(request)
    await run_in_threadpool(scu.echo, server_of(request), modality)
    return answer({})


async def store(request: Request) -> Response:
    modality = modality_of(request)
    body = await request.body()
    return await run_in_threadpool(_store, server_of(request), modality, body)


def _store(server: Server, modality: Modality, body: bytes) -> Response:
    resources, options = _store_request(body)
    if options.get("Asynchronous") or options.get("Synchronous", True) is False:
        raise BadRequest("asynchronous C-STORE is not available yet (it needs the jobs "
                         'engine): leave "Synchronous" true')
    for public_id in resources:
        if server.index.lookup(public_id) is None:
            raise UnknownResource(f"resource {public_id} does not exist")
    operations = scu.plan(server, resources)
    originator = (str(options.get("MoveOriginatorAet", "")), options.get("MoveOriginatorID"))
    failed = scu.store(server, modality, operations, originator=originator,
                       permissive=bool(options.get("Permissive", False)))
    report: dict[str, Any] = {
        "Description": "REST API",
        "FailedInstancesCount": failed,
        "InstancesCount": len(operations),
        "LocalAet": modality.local_aet or server.config["DicomAet"],
        "RemoteAet": modality.aet,
    }
    if resources:
        report["ParentResources"] = resources
    return answer(dict(sorted(report.items())))


def _store_request(body: bytes) -> tuple[list[str], dict[str, Any]]:
    """Orthanc's three bodies: an object with "Resources", a list of IDs, or one bare ID."""
    text = body.decode(errors="replace").strip()
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        parsed = text
    options = parsed if isinstance(parsed, dict) else {}
    if isinstance(parsed, dict):
        if "Resources" not in parsed:
            raise BadRequest('Missing field in JSON: "Resources"')
        parsed = parsed["Resources"]
    resources = [parsed] if isinstance(parsed, str) else parsed
    if not isinstance(resources, list) or not all(isinstance(r, str) and r for r in resources):
        raise BadRequest('"Resources" must be a list of Orthanc identifiers')
    return resources, options


def routes() -> list[Route]:
    return [
        Route("/modalities", list_modalities, methods=["GET"]),
        Route("/modalities/{id}/configuration", configuration, methods=["GET"]),
        Route("/modalities/{id}/echo", echo, methods=["POST"]),
        Route("/modalities/{id}/store", store, methods=["POST"]),
    ]
