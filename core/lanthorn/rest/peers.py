"""``/peers``: Orthanc peers (see ``lanthorn.peers``), their ``/system``, and sending
stored instances to them over HTTP, now or as an "OrthancPeerStore" job that retries
network failures (see ``rest.sending``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import LanthornError, NetworkError
from ..ingest import DICOM_ATTACHMENT
from ..peers import all_peers, call, connect, delete_peer, parse_peer, peer, save_peer
from ..storage import read_all
from ..types import PluginRoute, permitted
from .common import answer, flag, json_body, server_of
from .sending import Destination, advance

if TYPE_CHECKING:
    from ..server import Server

OPERATIONS = ["configuration", "store", "store-straight", "system"]


def list_peers(request: Request) -> Response:
    found = all_peers(server_of(request))
    if flag(request, "expand"):
        return answer({name: p.configuration() for name, p in sorted(found.items())})
    return answer(sorted(found))


def operations(request: Request) -> Response:
    peer(server_of(request), request.path_params["id"])
    return answer(OPERATIONS)


def configuration(request: Request) -> Response:
    return answer(peer(server_of(request), request.path_params["id"]).configuration())


async def put_peer(request: Request) -> Response:
    name = request.path_params["id"]
    defined = parse_peer(name, json_body(await request.body()))
    await run_in_threadpool(save_peer, server_of(request), defined)
    return answer({})


async def remove_peer(request: Request) -> Response:
    await run_in_threadpool(delete_peer, server_of(request), request.path_params["id"])
    return answer({})


async def system(request: Request) -> Response:
    server = server_of(request)
    remote = peer(server, request.path_params["id"])
    return answer(await run_in_threadpool(call, server, remote, "GET", "system"))


async def store(request: Request) -> Response:
    server, name = server_of(request), request.path_params["id"]
    peer(server, name)
    body = await request.body()
    return await run_in_threadpool(PEER.start, server, body, {"Peer": name})


async def store_straight(request: Request) -> Response:
    """Forward the body to the peer's ``/instances`` without storing it here."""
    server = server_of(request)
    remote = peer(server, request.path_params["id"])
    body = await request.body()
    try:
        reply = await run_in_threadpool(call, server, remote, "POST", "instances", content=body)
    except NetworkError as exc:
        raise NetworkError(f"Cannot send DICOM to remote peer: {remote.name} ({exc})") from exc
    return answer(reply)


def send_to_peer(server: Server, parameters: dict[str, Any], checkpoint: dict[str, Any],
                 progress: Callable[[float], None] | None = None) -> None:
    """POST each instance's file to the peer's ``/instances`` over one connection.

    Unless ``Permissive``, an instance the peer refuses stops the transfer with a
    NetworkError (so a job retries it); a peer that cannot be reached always does.
    """
    remote = peer(server, parameters["Peer"])
    instances = parameters["Instances"]
    with connect(server, remote) as client:
        for public_id in instances[checkpoint.get("Next", 0):]:
            data = _file(server, public_id)
            if data is None:  # deleted since the request: nothing to send
                advance(server, parameters, checkpoint, True, progress, remote=remote.name)
                continue
            response = client.post("instances", content=data)
            if not response.is_success:
                message = (f'peer "{remote.name}" refused instance {public_id}: HTTP '
                           f"{response.status_code} {response.text[:300]}")
                if not parameters.get("Permissive", False):
                    raise NetworkError(message)
            advance(server, parameters, checkpoint, response.is_success, progress,
                    remote=remote.name, size=len(data))


def _file(server: Server, public_id: str) -> bytes | None:
    resource = server.index.lookup(public_id)
    attachment = resource and server.index.attachment(resource.id, DICOM_ATTACHMENT)
    if not attachment:
        return None
    try:
        return read_all(server.storage, attachment.uuid, attachment.compression)
    except OSError as exc:
        raise LanthornError(f"the file of instance {public_id} cannot be read: {exc}") from exc


def store_report(server: Server, parameters: dict[str, Any],
                 checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Orthanc's account of a store to a peer (the answer, or the job's content)."""
    size = checkpoint.get("Size", 0)
    report: dict[str, Any] = {
        "Compress": False,
        "Description": "REST API",
        "FailedInstancesCount": checkpoint.get("Failed", 0),
        "InstancesCount": len(parameters["Instances"]),
        "Peer": [peer(server, parameters["Peer"]).url],
        "Size": str(size),
        "SizeMB": size // (1024 * 1024),
    }
    if parameters["Resources"]:
        report["ParentResources"] = parameters["Resources"]
    return dict(sorted(report.items()))


PEER = Destination("OrthancPeerStore", send_to_peer, store_report)
STORE_JOB_TYPE = PEER.job()


def routes() -> list[PluginRoute]:
    return [
        *permitted("read",
                   Route("/peers", list_peers, methods=["GET"]),
                   Route("/peers/{id}", operations, methods=["GET"]),
                   Route("/peers/{id}/system", system, methods=["GET"])),
        *permitted("write",
                   Route("/peers/{id}/store", store, methods=["POST"]),
                   Route("/peers/{id}/store-straight", store_straight, methods=["POST"])),
        *permitted("admin",
                   Route("/peers/{id}", put_peer, methods=["PUT"]),
                   Route("/peers/{id}", remove_peer, methods=["DELETE"]),
                   # holds the peer's password
                   Route("/peers/{id}/configuration", configuration, methods=["GET"])),
    ]
