"""DICOMweb for Lanthorn: QIDO-RS, WADO-RS, STOW-RS and WADO-URI.

Installing the distribution enables it: the routes are mounted under
``DicomWeb.Root`` (``/dicom-web``) and WADO-URI at ``DicomWeb.WadoRoot`` (``/wado``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

import lanthorn
from lanthorn import BadRequest, Level, PluginRoute, Server
from lanthorn.rest.common import json_body

from . import qido, stow, wado, wado_uri
from .client import Servers
from .options import read_options

__version__ = "0.1.0"

#: Top-level configuration keys this plugin owns.
config_sections = ("DicomWeb",)

STUDY = "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"


@lanthorn.hookimpl
def register_routes(server: Server) -> list[PluginRoute]:
    options = read_options(server)
    if not options.enable:
        return []

    def search(level: Level) -> Callable[[Request], Any]:
        return lambda request: qido.search(request, level, server, options)

    def retrieve(request: Request) -> Any:
        return wado.retrieve(request, server)

    def metadata(request: Request) -> Any:
        return wado.metadata(request, server, options)

    async def store(request: Request) -> Any:
        return await stow.store(request, server, options)

    reads = [
        Route("/studies", search(Level.STUDY), methods=["GET"]),
        Route("/series", search(Level.SERIES), methods=["GET"]),
        Route("/instances", search(Level.INSTANCE), methods=["GET"]),
        Route(STUDY, retrieve, methods=["GET"]),
        Route(STUDY + "/series", search(Level.SERIES), methods=["GET"]),
        Route(STUDY + "/instances", search(Level.INSTANCE), methods=["GET"]),
        Route(STUDY + "/metadata", metadata, methods=["GET"]),
        Route(SERIES, retrieve, methods=["GET"]),
        Route(SERIES + "/instances", search(Level.INSTANCE), methods=["GET"]),
        Route(SERIES + "/metadata", metadata, methods=["GET"]),
        Route(INSTANCE, retrieve, methods=["GET"]),
        Route(INSTANCE + "/metadata", metadata, methods=["GET"]),
        Route(INSTANCE + "/bulk/{path:path}", lambda r: wado.bulk(r, server), methods=["GET"]),
        Route(INSTANCE + "/frames/{frames}", lambda r: wado.frames(r, server),
              methods=["GET"]),
    ]
    writes = [Route("/studies", store, methods=["POST"]),
              Route(STUDY, store, methods=["POST"])]
    servers = Servers(server, options)

    def remote(operation: Callable[[Request, dict[str, Any]], Response]) -> Any:
        async def endpoint(request: Request) -> Response:
            body = json_body(await request.body())
            if not isinstance(body, dict):
                raise BadRequest("The body must contain a JSON object")
            return await run_in_threadpool(operation, request, body)
        return endpoint

    client = [
        Route("/servers", servers.list, methods=["GET"]),
        Route("/servers/{name}", servers.operations, methods=["GET"]),
        *(Route(f"/servers/{{name}}/{name}", remote(getattr(servers, name)), methods=["POST"])
          for name in ("qido", "get", "retrieve", "stow")),
    ]
    routes = [PluginRoute(Mount(options.root, routes=[*reads, *writes, *client]),
                          permission="write")]
    if options.enable_wado:
        routes.append(PluginRoute(Route(options.wado_root,
                                        lambda r: wado_uri.wado_uri(r, server),
                                        methods=["GET"])))
    return routes
