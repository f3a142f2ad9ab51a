"""``/tools/find``, ``/tools/count-resources`` and ``/tools/lookup``: thin adapters over
the one query engine."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import BadRequest
from ..model import Level
from ..query import Query, build_query
from ..types import PluginRoute, permitted
from .common import answer, json_body, server_of
from .describe import describe_many, parse_requested

if TYPE_CHECKING:
    from ..server import Server


async def find(request: Request) -> Response:
    body = json_body(await request.body())
    return await run_in_threadpool(_find, request, body)


async def count_resources(request: Request) -> Response:
    """How many resources ``/tools/find`` would list for this body: ``{"Count": n}``."""
    body = json_body(await request.body())
    server = server_of(request)
    ids = await run_in_threadpool(server.index.find,
                                  _query(server, _object(body), capped=False))
    return answer({"Count": len(ids)})


def _find(request: Request, body: object) -> Response:
    server, body = server_of(request), _object(body)
    query = _query(server, body)
    with server.index.read():  # one transaction for the matches and their descriptions
        ids = server.index.find(query)
        if not body.get("Expand", False):
            return answer(server.index.public_ids_of(ids))
        requested = parse_requested(body.get("RequestedTags") or [])
        form = "full" if body.get("Full") else "short" if body.get("Short") else "simplify"
        return answer(describe_many(server, ids, form=form, requested=requested))


def _object(body: object) -> dict:
    if not isinstance(body, dict):
        raise BadRequest("The body must contain a JSON object")
    return body


def _query(server: Server, body: dict, *, capped: bool = True) -> Query:
    """The query of a ``/tools/find`` body; ``capped`` applies ``LimitFind*``."""
    if not isinstance(body.get("Query"), dict):
        raise BadRequest('Field "Query" is missing, or is not a JSON object')
    try:
        level = Level.parse(str(body.get("Level", "")))
    except ValueError as exc:
        raise BadRequest(f'Field "Level": {exc}') from None
    limit, since = _natural(body, "Limit"), _natural(body, "Since")
    cap = server.config["LimitFindInstances" if level == Level.INSTANCE else "LimitFindResults"]
    if capped and cap and (not limit or limit > cap):
        limit = cap
    labels = body.get("Labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise BadRequest('Field "Labels" must be a list of strings')
    case_sensitive = body.get("CaseSensitive", server.config["CaseSensitivePN"])
    return build_query(
        level, body["Query"], main_tags=server.main_tags,
        case_sensitive_pn=bool(case_sensitive), limit=limit, since=since,
        labels=tuple(labels), labels_constraint=str(body.get("LabelsConstraint", "All")),
    )


def _natural(body: dict, key: str) -> int:
    value = body.get(key, 0) or 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRequest(f'Field "{key}" must be a non-negative integer')
    return value


async def lookup(request: Request) -> Response:
    """Which resources a PatientID or UID names (the body is the bare value)."""
    value = (await request.body()).decode(errors="replace").strip()
    if not value:
        raise BadRequest("The body must contain the identifier to look up")
    found = server_of(request).index.lookup_identifier(value)
    return answer([{"ID": r.public_id, "Path": f"/{r.level.plural}/{r.public_id}",
                    "Type": r.level.title} for r in found])


def routes() -> list[PluginRoute]:
    return permitted("read",  # queries that change nothing
                     Route("/tools/find", find, methods=["POST"]),
                     Route("/tools/count-resources", count_resources, methods=["POST"]),
                     Route("/tools/lookup", lookup, methods=["POST"]))
