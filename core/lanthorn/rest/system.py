"""``/system``, ``/statistics``, ``/changes``, ``/plugins``, reset and shutdown."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import __version__
from ..errors import BadRequest, UnknownResource
from ..index.records import Change
from ..types import PluginRoute, permitted
from .common import answer, flag, integer, server_of, text

#: The Orthanc REST API level Lanthorn implements; clients gate features on it.
ORTHANC_API_VERSION = "1.12.11"
ORTHANC_API_NUMBER = 27
DATABASE_VERSION = 6


def system(request: Request) -> Response:
    server = server_of(request)
    config = server.config
    return answer({
        "ApiVersion": ORTHANC_API_NUMBER,
        "CheckRevisions": bool(server.config["CheckRevisions"]),
        "DatabaseBackendPlugin": None,
        "DatabaseVersion": DATABASE_VERSION,
        "DicomAet": config["DicomAet"],
        "DicomPort": config["DicomPort"],
        "HttpPort": config["HttpPort"],
        "IsHttpServerSecure": not config["RemoteAccessAllowed"],
        "Lanthorn": __version__,
        "Name": config["Name"],
        "PluginsEnabled": True,
        "StorageAreaPlugin": None,
        "Version": ORTHANC_API_VERSION,
    })


def statistics(request: Request) -> Response:
    stats = server_of(request).index.statistics()
    counts = {f"Count{name}": stats.count_by_level[level] for level, name in
              zip(stats.count_by_level, ("Patients", "Studies", "Series", "Instances"),
                  strict=True)}
    return answer({
        **counts,
        "TotalDiskSize": str(stats.disk_size),
        "TotalDiskSizeMB": stats.disk_size // (1024 * 1024),
        "TotalUncompressedSize": str(stats.uncompressed_size),
        "TotalUncompressedSizeMB": stats.uncompressed_size // (1024 * 1024),
    })


def change_json(change: Change) -> dict:
    return {
        "ChangeType": change.change_type.name,
        "Date": change.date,
        "ID": change.public_id,
        "Path": f"/{change.level.plural}/{change.public_id}",
        "ResourceType": change.level.title,
        "Seq": change.seq,
    }


def changes(request: Request) -> Response:
    index = server_of(request).index
    last = index.last_change()
    last_seq = last.seq if last else 0
    if flag(request, "last"):
        return answer({"Changes": [change_json(last)] if last else [], "Done": True,
                       "Last": last_seq})
    since, limit = integer(request, "since"), integer(request, "limit", 100) or 100
    found = index.changes(since=since, limit=min(limit, 10_000))
    return answer({
        "Changes": [change_json(c) for c in found],
        "Done": not found or found[-1].seq >= last_seq,
        "Last": found[-1].seq if found else last_seq,
    })


def plugins(request: Request) -> Response:
    return answer(sorted(server_of(request).plugins.plugins))


def plugin(request: Request) -> Response:
    found = server_of(request).plugins.plugins.get(request.path_params["name"])
    if found is None:
        raise UnknownResource(f'no plugin named "{request.path_params["name"]}"')
    return answer(found.as_json())


def clear_changes(request: Request) -> Response:
    """Empty the change log; sequence numbers go on from where they were (a consumer's
    cursor stays valid), and changes not yet delivered to a consumer are lost with it."""
    server_of(request).index.clear_changes()
    return text("")


def reset(request: Request) -> Response:
    """Restart (``lanthorn serve`` runs its command line again: the configuration is
    read anew); the answer is sent before the server stops."""
    return _stop(request, restart=True)


def shutdown(request: Request) -> Response:
    """Stop ``lanthorn serve`` as SIGTERM does (with ``Workers``, every worker)."""
    return _stop(request, restart=False)


def _stop(request: Request, *, restart: bool) -> Response:
    stop = server_of(request).request_stop
    if stop is None:
        raise BadRequest("this server was not started by `lanthorn serve`: it cannot "
                         f"{'restart' if restart else 'stop'} itself")
    stop(restart)
    return answer({})


def routes() -> list[PluginRoute]:
    return [
        *permitted("admin",
                   Route("/tools/reset", reset, methods=["POST"]),
                   Route("/tools/shutdown", shutdown, methods=["POST"])),
        *permitted("read",
                   Route("/system", system, methods=["GET"]),
                   Route("/statistics", statistics, methods=["GET"]),
                   Route("/changes", changes, methods=["GET"]),
                   Route("/plugins", plugins, methods=["GET"]),
                   Route("/plugins/{name}", plugin, methods=["GET"])),
        *permitted("write", Route("/changes", clear_changes, methods=["DELETE"])),
    ]
