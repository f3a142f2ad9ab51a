"""Assembling the Starlette application from every plugin's routes.

Built once from lists (core routes are a built-in plugin like any other); errors are
rendered by the ``handle_exception`` hook, whose core default is Orthanc's JSON error.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..auth import PERMISSIONS
from ..errors import Forbidden, LanthornError, PluginError
from ..types import PluginRoute
from .access import AccessControl
from .audit import AuditTrail
from .hardening import harden, surround
from .routing import GroupedRouter

if TYPE_CHECKING:
    from ..server import Server

log = logging.getLogger(__name__)

HTTP_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                405: "Method Not Allowed", 406: "Not Acceptable", 413: "Content Too Large",
                415: "Unsupported Media Type", 416: "Range Not Satisfiable",
                500: "Internal Server Error", 507: "Insufficient Storage"}


def build_app(server: Server) -> Starlette:
    specs = collect_routes(server)

    async def on_error(request: Request, exc: Exception) -> Response:
        return render_error(server, request, exc)

    app = Starlette(routes=[spec.route for spec in specs],
                    exception_handlers={Exception: on_error, HTTPException: on_error,
                                        LanthornError: on_error})
    app.router = GroupedRouter(app.router.routes)
    app.state.server = server
    harden(app, server)
    app.add_middleware(AccessControl, server=server, specs=specs, router=app.router)
    app.add_middleware(AuditTrail, server=server)  # outside: it records refusals too
    surround(app, server)
    if not server.config["RemoteAccessAllowed"]:
        app.add_middleware(LoopbackOnly, server=server)  # added last: runs first
    return app


def render_error(server: Server, request: Request, exc: Exception) -> Response:
    """The ``handle_exception`` hook's answer, Orthanc's JSON error if that fails."""
    try:
        return server.plugins.hook.handle_exception(server=server, request=request, exc=exc)
    except Exception:  # a broken renderer must not turn an error into a bare 500
        log.exception("a plugin failed in handle_exception")
        return error_response(request, exc, server.config["HttpDescribeErrors"])


def collect_routes(server: Server) -> list[PluginRoute]:
    """Every plugin's routes; a path served twice is an error unless declared an override."""
    chosen: dict[tuple[str, frozenset[str]], PluginRoute] = {}
    for batch in server.plugins.hook.register_routes(server=server):
        for spec in batch:
            _check_permission(spec)
            key = _route_key(spec.route)
            if key in chosen and not spec.overrides_core:
                if not chosen[key].overrides_core:
                    raise PluginError(f"two plugins serve {sorted(key[1])} {key[0]}; "
                                      "declare overrides_core=True to replace a core route")
                continue
            chosen[key] = spec
    return list(chosen.values())


def _check_permission(spec: PluginRoute | BaseRoute) -> None:
    """Every route says who may call it: a forgotten permission is a start-up error, not
    a route that anyone, or no one, can reach."""
    if not isinstance(spec, PluginRoute):
        raise PluginError(f"{_route_key(spec)[0]} declares no permission: wrap it in "
                          "lanthorn.PluginRoute(route, permission)")
    if spec.public and spec.permission is None:
        return
    if spec.permission not in PERMISSIONS:
        raise PluginError(f"{_route_key(spec.route)[0]}: unknown permission "
                          f'"{spec.permission}" (one of {", ".join(PERMISSIONS)})')


def _route_key(route: BaseRoute) -> tuple[str, frozenset[str]]:
    if isinstance(route, Route):
        return route.path, frozenset(route.methods or ())
    if isinstance(route, Mount):
        return route.path, frozenset({"*"})
    return repr(route), frozenset()


def error_response(request: Request, exc: Exception, describe: bool = True) -> Response:
    """Orthanc's JSON error object, with the specific reason under ``Details``; without
    ``describe`` (``HttpDescribeErrors: false``) the status alone, as Orthanc answers."""
    if isinstance(exc, LanthornError):
        status, code, name, details = exc.http_status, exc.orthanc_status, \
            exc.orthanc_error, exc.message
    elif isinstance(exc, HTTPException):
        status, details = exc.status_code, exc.detail
        code, name = (17, "Unknown resource") if status == 404 else (8, "Bad request")
        if status == 405:
            code, name = 8, "Method not allowed"
    else:
        log.exception("internal error on %s %s", request.method, request.url.path)
        status, code, name, details = 500, -1, "Internal error", f"{type(exc).__name__}: {exc}"
    body = {
        "HttpError": HTTP_REASONS.get(status, str(status)),
        "HttpStatus": status,
        "Message": name,
        "Method": request.method,
        "OrthancError": name,
        "OrthancStatus": code,
        "Uri": request.url.path,
    }
    if details and details != name:
        body["Details"] = details
    return JSONResponse(body, status_code=status) if describe else Response(status_code=status)


class LoopbackOnly:
    """``RemoteAccessAllowed: false``: only clients on this machine may talk to us."""

    def __init__(self, app: ASGIApp, server: Server) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] == "http" and client and not _is_loopback(client[0]):
            refusal = Forbidden("remote access is disabled (RemoteAccessAllowed is false)")
            await render_error(self.server, Request(scope), refusal)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("localhost", "testclient")
