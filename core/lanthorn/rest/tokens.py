"""``/auth/tokens``: API tokens. Everyone manages their own; an admin manages all.

``POST`` answers the token's secret, the only time it is shown (only its digest is kept).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import tokens
from ..errors import BadRequest
from ..types import PluginRoute, permitted
from .access import principal_of
from .common import answer, json_body, server_of, text


async def create(request: Request) -> Response:
    caller = principal_of(request)
    body = await request.body()
    options = json_body(body) if body.strip() else {}  # no body: a token for oneself
    if not isinstance(options, dict):
        raise BadRequest("The body must contain a JSON object")
    unknown = set(options) - {"User", "Role", "ExpiresIn", "Description"}
    if unknown:
        raise BadRequest("unknown options: " + ", ".join(sorted(unknown)))
    record, secret = tokens.create(
        server_of(request), caller, _typed(options, "User", str, caller.name),
        _typed(options, "Role", str, None), _typed(options, "ExpiresIn", (int, float), None),
        _typed(options, "Description", str, ""))
    return answer({**tokens.describe(record), "Token": secret})


def listing(request: Request) -> Response:
    found = tokens.listed(server_of(request), principal_of(request),
                          request.query_params.get("user"))
    return answer([tokens.describe(record) for record in found])


def revoke(request: Request) -> Response:
    tokens.revoke(server_of(request), principal_of(request), request.path_params["id"])
    return text("")


def _typed(options: dict[str, Any], name: str, kind: type | tuple[type, ...],
           default: Any) -> Any:  # noqa: ANN401 - whichever type was asked for
    value = options.get(name, default)
    if value is not default and (not isinstance(value, kind) or isinstance(value, bool)):
        raise BadRequest(f'"{name}" has the wrong type')
    return value


def routes() -> list[PluginRoute]:
    return permitted("account",  # everyone's own tokens; the functions check whose
                     Route("/auth/tokens", listing, methods=["GET"]),
                     Route("/auth/tokens", create, methods=["POST"]),
                     Route("/auth/tokens/{id}", revoke, methods=["DELETE"]))
