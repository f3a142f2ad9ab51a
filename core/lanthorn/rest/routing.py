"""Finding a request's route once, among the routes that can match its first segment.

Starlette's router tries every route in turn; with some 200 routes that scan, done once
by the access check and again by the router, cost more than many an answer. Here the
routes are grouped by the first segment of their path (a route that starts with a
parameter, like ``/{level}/{id}``, belongs to every group, in its place), the access check
matches the request in its group, and the router reuses that match.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match, Mount, Route, Router, get_route_path
from starlette.types import Receive, Scope, Send

MATCH_KEY = "lanthorn.match"
#: A request's route: (route, what it adds to the scope, FULL or PARTIAL).
Found = tuple[BaseRoute, dict[str, Any], Match]


class GroupedRouter(Router):
    """A Starlette router that searches only the routes of the request's first segment."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        super().__init__(routes=list(routes))
        self._anywhere = [r for r in self.routes if _first_segment(r) is None]
        segments = {_first_segment(r) for r in self.routes} - {None}
        self._groups = {segment: [r for r in self.routes if _first_segment(r) in (segment, None)]
                        for segment in segments}

    def find(self, scope: Scope) -> Found | None:
        """The first route that fully matches, else the first partial match (a wrong
        method: 405), else None; remembered in the scope for ``app``."""
        if MATCH_KEY in scope:
            return scope[MATCH_KEY]
        segment = get_route_path(scope).split("/", 2)[1:2]
        partial: Found | None = None
        for route in self._groups.get(segment[0] if segment else "", self._anywhere):
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                partial = (route, child_scope, match)
                break
            if match is Match.PARTIAL and partial is None:
                partial = (route, child_scope, match)
        scope[MATCH_KEY] = partial
        return partial

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.find(scope) if scope["type"] == "http" else None
        if found is None:  # lifespan, or no route: Starlette's own ending (redirect, 404)
            await super().app(scope, receive, send)
            return
        route, child_scope, _ = found
        scope.setdefault("router", self)
        scope["route"] = route
        scope.update(child_scope)
        await route.handle(scope, receive, send)


def _first_segment(route: BaseRoute) -> str | None:
    """The literal first segment of the route's path; None when it may be anything."""
    path = route.path if isinstance(route, Route | Mount) else ""
    first = path.split("/", 2)[1] if path.startswith("/") else ""
    return None if not first or "{" in first else first
