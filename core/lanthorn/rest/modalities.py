"""``/modalities``: the remote modalities, C-ECHO and C-STORE to them.

Modalities come from ``DicomModalities`` and from ``PUT /modalities/{id}`` (kept in the
index; across restarts with ``DicomModalitiesInDatabase``). A store runs during the
request, or as a "DicomModalityStore" job that retries network failures (see
``rest.sending``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..config import ConfigError
from ..dicom import parse_instance
from ..dimse import remote, scu
from ..dimse.access import (
    Modality,
    all_modalities,
    modality_named,
    parse_modality,
    with_overrides,
)
from ..dimse.commitment import request_commitment, stored_references
from ..errors import BadRequest
from ..model import Level
from ..types import PluginRoute, permitted
from .common import answer, flag, json_body, server_of, timeout_option
from .sending import Destination, advance

if TYPE_CHECKING:
    from ..server import Server


def modality_of(request: Request) -> Modality:
    return modality_named(server_of(request), request.path_params["id"])


def modality_for(modality: Modality, options: dict[str, Any]) -> Modality:
    """``with_overrides`` for a request body: a malformed value is a 400."""
    try:
        return with_overrides(modality, options)
    except ConfigError as exc:
        raise BadRequest(str(exc)) from None


def list_modalities(request: Request) -> Response:
    modalities = all_modalities(server_of(request))
    if flag(request, "expand"):
        return answer({name: m.configuration() for name, m in sorted(modalities.items())})
    return answer(sorted(modalities))


def configuration(request: Request) -> Response:
    return answer(modality_of(request).configuration())


async def echo(request: Request) -> Response:
    body = await request.body()
    await run_in_threadpool(_echo, server_of(request), modality_of(request),
                            json_body(body) if body.strip() else {})
    return answer({})


async def echo_anywhere(request: Request) -> Response:
    """``POST /tools/dicom-echo``: C-ECHO to a modality given in the body, configured or
    not (Orthanc's object form: AET, Host, Port, Timeout...)."""
    body = json_body(await request.body())
    try:
        modality = parse_modality("(dicom-echo)", body)
    except ConfigError as exc:
        raise BadRequest(str(exc)) from None
    await run_in_threadpool(_echo, server_of(request), modality, body)
    return answer({})


def _echo(server: Server, modality: Modality, body: Any) -> None:
    """C-ECHO, then, with the body's ``CheckFind`` (by default ``DicomEchoChecksFind``),
    a C-FIND of a study that does not exist, as Orthanc: a modality that echoes but will
    not answer our queries fails here, not at the first real query. The body's
    ``Timeout`` (seconds) bounds each."""
    options = body if isinstance(body, dict) else {}
    timeout = timeout_option(options)
    check_find = options.get("CheckFind", server.config["DicomEchoChecksFind"])
    if not isinstance(check_find, bool):
        raise BadRequest('"CheckFind" must be true or false')
    scu.echo(server, modality, timeout)
    if check_find:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = generate_uid()
        remote.find(server, modality, query, remote.find_model(Level.STUDY), timeout)


async def store(request: Request) -> Response:
    modality = modality_of(request)
    body = await request.body()
    return await run_in_threadpool(MODALITY.start, server_of(request), body,
                                   {"Modality": modality.name})


#: The report's (and checkpoint's) key for the storage commitment asked after a store.
COMMITMENT = "StorageCommitmentTransactionUID"


def send_to_modality(server: Server, parameters: dict[str, Any], checkpoint: dict[str, Any],
                     progress: Callable[[float], None] | None = None) -> None:
    """C-STORE the ``Instances`` of a store request, from ``checkpoint["Next"]`` on; then,
    with ``StorageCommitment``, ask the modality to commit to every one of them, once (a
    permissive store's failures come back as the report's failures)."""
    modality = modality_for(modality_named(server, parameters["Modality"]), parameters)
    instances = parameters["Instances"]
    originator = (str(parameters.get("MoveOriginatorAet", "")),
                  parameters.get("MoveOriginatorID"))
    timeout = timeout_option(parameters)
    scu.store(server, modality, scu.plan(server, instances[checkpoint.get("Next", 0):]),
              originator=originator, permissive=bool(parameters.get("Permissive", False)),
              timeout=timeout,
              after_each=lambda stored: advance(server, parameters, checkpoint, stored, progress,
                                                remote=modality.aet))
    if parameters.get("StorageCommitment") is True and COMMITMENT not in checkpoint:
        found = [server.index.lookup(public_id) for public_id in instances]
        sent = stored_references(server, [r.id for r in found if r is not None])
        if sent:
            checkpoint[COMMITMENT] = request_commitment(server, modality, sent, timeout)


def store_report(server: Server, parameters: dict[str, Any],
                 checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Orthanc's account of a store (the answer, or the job's content)."""
    modality = modality_for(modality_named(server, parameters["Modality"]), parameters)
    report: dict[str, Any] = {
        "Description": "REST API",
        "FailedInstancesCount": checkpoint.get("Failed", 0),
        "InstancesCount": len(parameters["Instances"]),
        "LocalAet": modality.local_aet or server.config["DicomAet"],
        "RemoteAet": modality.aet,
    }
    if parameters["Resources"]:
        report["ParentResources"] = parameters["Resources"]
    if COMMITMENT in checkpoint:
        report[COMMITMENT] = checkpoint[COMMITMENT]
    return dict(sorted(report.items()))


def _check_store(server: Server, options: dict[str, Any], target: dict[str, Any]) -> None:
    timeout_option(options)
    modality_for(modality_named(server, target["Modality"]), options)


MODALITY = Destination("DicomModalityStore", send_to_modality, store_report, _check_store)
STORE_JOB_TYPE = MODALITY.job()


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


async def put_modality(request: Request) -> Response:
    """Define or replace a modality (Orthanc's object form); kept in the index, so every
    process sees it (across restarts with ``DicomModalitiesInDatabase``)."""
    name = request.path_params["id"]
    try:
        defined = parse_modality(name, json_body(await request.body()))
    except ConfigError as exc:
        raise BadRequest(str(exc)) from None
    await run_in_threadpool(server_of(request).index.set_remote_node, "modality", name,
                            defined.configuration())
    return answer({})


async def delete_modality(request: Request) -> Response:
    modality = modality_of(request)
    await run_in_threadpool(server_of(request).index.set_remote_node, "modality",
                            modality.name, None)
    return answer({})


def routes() -> list[PluginRoute]:
    return [
        *permitted("read",
                   Route("/modalities", list_modalities, methods=["GET"]),
                   Route("/modalities/{id}", operations, methods=["GET"]),
                   Route("/modalities/{id}/configuration", configuration, methods=["GET"])),
        *permitted("store",
                   Route("/modalities/{id}/echo", echo, methods=["POST"]),
                   Route("/tools/dicom-echo", echo_anywhere, methods=["POST"])),
        *permitted("write",
                   Route("/modalities/{id}/store-straight", store_straight, methods=["POST"]),
                   Route("/modalities/{id}/store", store, methods=["POST"])),
        *permitted("admin",
                   Route("/modalities/{id}", put_modality, methods=["PUT"]),
                   Route("/modalities/{id}", delete_modality, methods=["DELETE"])),
    ]
