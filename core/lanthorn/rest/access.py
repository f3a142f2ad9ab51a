"""Authentication and authorization of every HTTP request, before routing.

Each route needs the permission (``read``, ``store``, ``write``, ``admin`` or
``account``) its ``PluginRoute`` declares; there is no default. Identity comes from the
``authenticate`` hook, then every ``filter_http_request`` may veto (the core's own checks
the roles). A request that matches no route still needs credentials: a stranger learns
nothing, not even which resources exist (401, not 404).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Match

from ..auth import ANONYMOUS, authentication_enabled
from ..errors import Forbidden, Unauthorized

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from ..server import Server
    from ..types import PluginRoute, Principal
    from .routing import GroupedRouter

CORE_FILTER = "lanthorn.builtin.auth"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PERMISSION_KEY = "lanthorn.permission"
PRINCIPAL_KEY = "lanthorn.principal"


def required_permission(request: Request) -> str | None:
    """The permission of the route ``request`` matched; None when it matched none."""
    return request.scope.get(PERMISSION_KEY)


def principal_of(request: Request) -> Principal | None:
    """Who is calling (set before the endpoint runs)."""
    return request.scope.get(PRINCIPAL_KEY)


@dataclass(frozen=True)
class Requirement:
    permission: str | None  # None: the request matches no route (answered 404 or 405)
    public: bool = False


class AccessControl:
    """ASGI middleware: identify the caller, then let plugins and roles decide."""

    def __init__(self, app: ASGIApp, server: Server, specs: list[PluginRoute],
                 router: GroupedRouter) -> None:
        self.app = app
        self.server = server
        self.specs = {id(spec.route): spec for spec in specs}
        self.router = router
        self.enabled = authentication_enabled(server.config)
        # Password checks and plugins' filters may take time: off the event loop. The
        # core's role check alone (authentication off) is cheaper than the thread hop.
        self.in_thread = self.enabled or any(
            getattr(impl.plugin, "__name__", "") != CORE_FILTER
            for impl in server.plugins.hook.filter_http_request.get_hookimpls())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        requirement = self.requirement(scope)
        scope[PERMISSION_KEY] = requirement.permission
        request = Request(scope, receive)
        if not requirement.public:
            refusal = await run_in_threadpool(self.decide, request) if self.in_thread \
                else self.decide(request)
            if refusal is not None:
                from .app import render_error

                response = render_error(self.server, request, refusal)
                if isinstance(refusal, Unauthorized):
                    response.headers["WWW-Authenticate"] = 'Basic realm="Lanthorn"'
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def requirement(self, scope: Scope) -> Requirement:
        found = self.router.find(scope)
        if found is None or found[2] is not Match.FULL:
            return Requirement(None)
        spec = self.specs[id(found[0])]
        return Requirement(spec.permission, spec.public)

    def decide(self, request: Request) -> Unauthorized | Forbidden | None:
        """The refusal to answer, or None to go on (``request`` then carries the principal)."""
        hook = self.server.plugins.hook
        principal = hook.authenticate(server=self.server, request=request) \
            if self.enabled else ANONYMOUS
        if principal is None:
            return Unauthorized("credentials are missing or wrong")
        request.scope[PRINCIPAL_KEY] = principal
        try:
            allowed = all(hook.filter_http_request(server=self.server, request=request,
                                                   principal=principal))
        except Forbidden as refusal:  # a plugin's refusal with its reason
            return refusal
        if not allowed:
            return Forbidden(f'"{principal.name}" may not do this '
                             f"({required_permission(request) or 'unknown'} permission)")
        return None
