"""``/modalities``: the remote modalities of ``DicomModalities``, C-ECHO and C-STORE to them.

Modalities come from the configuration only (``DicomModalitiesInDatabase``, and with
it ``PUT``/``DELETE``, comes later). A store runs during the request, or as a
"DicomModalityStore" job that retries network failures (see ``lanthorn.jobs``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..dicom import parse_instance
from ..dimse import scu
from ..dimse.access import Modality, modality_named, parse_modalities
from ..errors import BadRequest, UnknownResource
from ..jobs import JobContext, JobType
from ..model import Level
from .common import answer, asynchronous, flag, job_answer, server_of

if TYPE_CHECKING:
    from ..server import Server


def modality_of(request: Request) -> Modality:
    return named_modality(server_of(request), request.path_params["id"])


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
    for public_id in resources:
        if server.index.lookup(public_id) is None:
            raise UnknownResource(f"resource {public_id} does not exist")
    parameters = {**options, "Resources": resources, "Modality": modality.name,
                  "Instances": _instances(server, resources)}
    if asynchronous(options):
        job_id = server.jobs.submit(STORE_JOB, parameters, content=store_report(server, parameters),
                                    priority=int(options.get("Priority", 0)))
        return job_answer(job_id)
    checkpoint: dict[str, int] = {}
    send_to_modality(server, parameters, checkpoint)
    return answer(store_report(server, parameters, checkpoint))


def send_to_modality(server: Server, parameters: dict[str, Any], checkpoint: dict[str, int],
                     progress: Callable[[float], None] | None = None) -> None:
    """C-STORE the ``Instances`` of a store request.

    ``checkpoint`` records how far the transfer got, so that a job resumes where it
    stopped (after a retry, a pause or a takeover) instead of sending everything again.
    """
    modality = named_modality(server, parameters["Modality"])
    checkpoint.setdefault("Next", 0)
    checkpoint.setdefault("Failed", 0)
    instances = parameters["Instances"]

    def after_each(stored: bool) -> None:
        checkpoint["Next"] += 1
        checkpoint["Failed"] += not stored
        if progress is not None:
            progress(checkpoint["Next"] / len(instances))

    originator = (str(parameters.get("MoveOriginatorAet", "")),
                  parameters.get("MoveOriginatorID"))
    scu.store(server, modality, scu.plan(server, instances[checkpoint["Next"]:]),
              originator=originator, permissive=bool(parameters.get("Permissive", False)),
              after_each=after_each)


def store_report(server: Server, parameters: dict[str, Any],
                 checkpoint: dict[str, int] | None = None) -> dict[str, Any]:
    """Orthanc's account of a store (the answer, or the job's content)."""
    modality = named_modality(server, parameters["Modality"])
    report: dict[str, Any] = {
        "Description": "REST API",
        "FailedInstancesCount": (checkpoint or {}).get("Failed", 0),
        "InstancesCount": len(parameters["Instances"]),
        "LocalAet": modality.local_aet or server.config["DicomAet"],
        "RemoteAet": modality.aet,
    }
    if parameters["Resources"]:
        report["ParentResources"] = parameters["Resources"]
    return dict(sorted(report.items()))


def named_modality(server: Server, name: str) -> Modality:
    return modality_named(server.config, name)


def _instances(server: Server, public_ids: list[str]) -> list[str]:
    """The instances under the given resources, in index order (deleted ones skipped)."""
    ids: list[int] = []
    for public_id in public_ids:
        resource = server.index.lookup(public_id)
        if resource is not None:
            ids += server.index.descendants(resource.id, Level.INSTANCE)
    return server.index.public_ids_of(ids)


def _run_store_job(context: JobContext) -> None:
    server, parameters, checkpoint = context.server, context.parameters, context.checkpoint

    def progress(fraction: float) -> None:
        context.content = store_report(server, parameters, checkpoint)
        context.progress(fraction)

    try:
        send_to_modality(server, parameters, checkpoint, progress)
    finally:
        context.content = store_report(server, parameters, checkpoint)


STORE_JOB = "DicomModalityStore"
STORE_JOB_TYPE = JobType(STORE_JOB, _run_store_job, retry=True)


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


#: What ``GET /modalities/{id}`` lists, as Orthanc does.
OPERATIONS = ["configuration", "echo", "find", "find-instance", "find-patient", "find-series",
              "find-study", "find-worklist", "move", "query", "storage-commitment", "store",
              "store-straight"]


def operations(request: Request) -> Response:
    modality_of(request)
    return answer(OPERATIONS)


async def store_straight(request: Request) -> Response:
    """C-STORE the DICOM file of the body without storing it here."""
    modality, data = modality_of(request), await request.body()
    dataset = parse_instance(data).dataset
    server = server_of(request)
    await run_in_threadpool(scu.store, server, modality, scu.plan(server, [dataset]))
    return answer({"SOPClassUID": str(dataset.SOPClassUID),
                   "SOPInstanceUID": str(dataset.SOPInstanceUID)})


def routes() -> list[Route]:
    return [
        Route("/modalities", list_modalities, methods=["GET"]),
        Route("/modalities/{id}", operations, methods=["GET"]),
        Route("/modalities/{id}/store-straight", store_straight, methods=["POST"]),
        Route("/modalities/{id}/configuration", configuration, methods=["GET"]),
        Route("/modalities/{id}/echo", echo, methods=["POST"]),
        Route("/modalities/{id}/store", store, methods=["POST"]),
    ]
