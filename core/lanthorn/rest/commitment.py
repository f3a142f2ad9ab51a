"""Storage commitment driven over REST: ask a modality whether it keeps instances
(``/modalities/{id}/storage-commitment``), read its report (``/storage-commitment/{id}``)
and delete what it committed (``.../remove``), in Orthanc's shapes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..dimse.commitment import request_commitment, stored_references
from ..errors import BadRequest, UnknownResource
from ..index.commitments import CommitmentRecord
from ..model import Level
from ..types import PluginRoute, permitted
from .common import answer, json_body, server_of, timeout_option
from .modalities import modality_of

if TYPE_CHECKING:
    from ..server import Server

#: Descriptions of the standard's failure reasons (PS3.4 J.3.2.1.1).
FAILURE_REASONS = {
    0x0110: "Processing failure",
    0x0112: "No such object instance",
    0x0119: "Class-instance conflict",
    0x0122: "Referenced SOP Class not supported",
    0x0124: "Refused because of insufficient resources",
    0x0131: "Duplicate transaction UID",
}


async def commit(request: Request) -> Response:
    body = await request.body()
    parsed = json_body(body) if body.strip() else None
    modality = modality_of(request)
    server = server_of(request)
    instances = await run_in_threadpool(_instances, server, parsed)
    timeout = timeout_option(parsed)
    transaction = await run_in_threadpool(request_commitment, server, modality, instances,
                                          timeout)
    return answer({"ID": transaction, "Path": f"/storage-commitment/{transaction}"})


def _instances(server: Server, body: Any) -> list[list[str]]:
    """Orthanc's bodies: a list of resource IDs, or ``{"DicomInstances": [...],
    "Resources": [...]}`` where DICOM instances are objects or pairs of UIDs."""
    if isinstance(body, list):
        body = {"Resources": body}
    if not isinstance(body, dict):
        raise BadRequest('The body must be a list of resource IDs or an object with '
                         '"DicomInstances" and/or "Resources"')
    instances = [_pair(item) for item in body.get("DicomInstances", [])]
    for public_id in body.get("Resources", []):
        found = server.index.lookup(public_id) if isinstance(public_id, str) else None
        if found is None:
            raise UnknownResource(f"no resource has the ID {public_id}")
        instances += stored_references(
            server, server.index.descendants(found.id, Level.INSTANCE))
    if not instances:
        raise BadRequest("no instance to commit")
    return instances


def _pair(item: Any) -> list[str]:
    if isinstance(item, dict):
        item = [item.get("SOPClassUID"), item.get("SOPInstanceUID")]
    if not (isinstance(item, list) and len(item) == 2 and all(isinstance(u, str) and u
                                                               for u in item)):
        raise BadRequest('each of "DicomInstances" must give a SOPClassUID and a '
                         "SOPInstanceUID")
    return item


def _record(request: Request) -> CommitmentRecord:
    transaction = request.path_params["id"]
    found = server_of(request).index.commitments.get(transaction)
    if found is None:
        raise UnknownResource(f"unknown storage commitment transaction {transaction}")
    return found


def report(request: Request) -> Response:
    found = _record(request)
    return answer({
        "Failures": [{"Description": FAILURE_REASONS.get(reason, "Unknown failure"),
                      "FailureReason": reason, "SOPClassUID": sop_class,
                      "SOPInstanceUID": sop_instance}
                     for sop_class, sop_instance, reason in found.failures],
        "RemoteAET": found.remote_aet,
        "Status": found.status,
        "Success": [{"SOPClassUID": sop_class, "SOPInstanceUID": sop_instance}
                    for sop_class, sop_instance in found.success],
    })


def remove(request: Request) -> Response:
    """Delete the instances the modality committed to keep (a transfer is complete)."""
    found = _record(request)
    if found.status == "Pending":
        raise BadRequest("the modality has not reported on this storage commitment yet")
    server = server_of(request)
    for _, sop_instance in found.success:
        for resource in server.index.lookup_identifier(sop_instance):
            if resource.level == Level.INSTANCE:
                server.delete(resource)
    return answer({})


def routes() -> list[PluginRoute]:
    return [
        *permitted("read", Route("/storage-commitment/{id}", report, methods=["GET"])),
        *permitted("write",
                   Route("/modalities/{id}/storage-commitment", commit, methods=["POST"]),
                   Route("/storage-commitment/{id}/remove", remove, methods=["POST"])),
    ]
