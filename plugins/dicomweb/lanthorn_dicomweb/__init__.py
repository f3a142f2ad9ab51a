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
from starlette.routing import Route

import lanthorn
from lanthorn import BadRequest, Level, PluginRoute, Server
from lanthorn.rest.common import json_body

from . import qido, rendered, stow, wado, wado_uri
from .client import Servers
from .options import read_options

__version__ = "0.1.0"

#: Top-level configuration keys this plugin owns.
config_sections = ("DicomWeb",)

STUDY = "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"


@lanthorn.hookimpl
def startup(server: Server) -> None:
    """Refuse to start on a malformed ``DicomWeb`` section, naming the option."""
    Servers(server, read_options(server))


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
        ("/studies", search(Level.STUDY)),
        ("/series", search(Level.SERIES)),
        ("/instances", search(Level.INSTANCE)),
        (STUDY, retrieve),
        (STUDY + "/series", search(Level.SERIES)),
        (STUDY + "/instances", search(Level.INSTANCE)),
        (STUDY + "/metadata", metadata),
        (SERIES, retrieve),
        (SERIES + "/instances", search(Level.INSTANCE)),
        (SERIES + "/metadata", metadata),
        (INSTANCE, retrieve),
        (INSTANCE + "/metadata", metadata),
        (INSTANCE + "/bulk/{path:path}", lambda r: wado.bulk(r, server)),
        (INSTANCE + "/frames/{frames}", lambda r: wado.frames(r, server)),
        *((path + "/rendered", lambda r: rendered.rendered_instances(r, server))
          for path in (STUDY, SERIES)),
        (INSTANCE + "/rendered", lambda r: rendered.rendered_resource(r, server)),
        (INSTANCE + "/frames/{frames}/rendered", lambda r: rendered.rendered_resource(r, server)),
        *((path + "/thumbnail", lambda r: rendered.thumbnail(r, server))
          for path in (STUDY, SERIES, INSTANCE, INSTANCE + "/frames/{frames}")),
    ]
    servers = Servers(server, options)

    def remote(operation: Callable[[Request, dict[str, Any]], Response]) -> Any:
        async def endpoint(request: Request) -> Response:
            body = json_body(await request.body())
            if not isinstance(body, dict):
                raise BadRequest("The body must contain a JSON object")
            return await run_in_threadpool(operation, request, body)
        return endpoint

    root = options.root
    routes = [PluginRoute(Route(root + path, endpoint, methods=["GET"]), permission="read")
              for path, endpoint in reads]
    routes += [PluginRoute(Route(root + path, store, methods=["POST"]), permission="store")
               for path in ("/studies", STUDY)]
    routes += [PluginRoute(Route(root + "/servers", servers.list, methods=["GET"]), "read"),
               PluginRoute(Route(root + "/servers/{name}", servers.operations, methods=["GET"]),
                           "read")]
    routes += [PluginRoute(Route(f"{root}/servers/{{name}}/{name}", remote(getattr(servers, name)),
                                 methods=["POST"]), permission="admin")
               for name in ("qido", "get", "retrieve", "stow")]
    if options.enable_wado:
        routes.append(PluginRoute(Route(options.wado_root,
                                        lambda r: wado_uri.wado_uri(r, server),
                                        methods=["GET"]), "read"))
    return routes
