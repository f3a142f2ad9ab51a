"""The REST side of the audit log: which action a request is, and the admin route.

``AuditTrail`` wraps the whole application (outside access control, so refusals are
recorded too) and records one entry per request once it is answered. What a request
*is* comes from one table, ``ACTIONS``; other routes are classified by the permission
they need. Successful reads of routes that reveal no patient data (``QUIET``) are not
recorded, so that a polling web page does not drown the log.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Mount, Route

from ..errors import BadRequest
from ..index.audit import AuditEntry, AuditFilter
from ..model import Level
from ..types import PluginRoute
from .access import SAFE_METHODS, principal_of, required_permission
from .common import answer, integer, server_of
from .routing import MATCH_KEY

if TYPE_CHECKING:
    from starlette.responses import Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from ..server import Server

LEVEL = "/{level:lanthorn_level}/{id}"
DOWNLOADS = (LEVEL + "/archive", LEVEL + "/media", "/tools/create-archive", "/tools/create-media",
             "/tools/create-media-extended")
#: The action of routes whose permission does not say it (HEAD counts as GET).
ACTIONS: dict[tuple[str, str], str] = {
    ("GET", "/instances/{id}/file"): "download",
    **{(method, path): "download" for method in ("GET", "POST") for path in DOWNLOADS},
    **{("POST", path): "modify" for path in (
        LEVEL + "/modify", "/tools/bulk-modify", "/studies/{id}/split", "/studies/{id}/merge")},
    **{("POST", path): "anonymize" for path in (LEVEL + "/anonymize", "/tools/bulk-anonymize")},
    ("DELETE", LEVEL): "delete",
    ("POST", "/tools/bulk-delete"): "delete",
    **{("POST", path): "query" for path in (
        "/tools/find", "/tools/lookup", "/tools/count-resources", "/modalities/{id}/query",
        "/modalities/{id}/find-worklist", "/modalities/{id}/find",
        *(f"/modalities/{{id}}/find-{level}" for level in (
            "patient", "study", "series", "instance")))},
    ("POST", "/modalities/{id}/move"): "move",
    ("POST", "/modalities/{id}/get"): "get",
    **{("POST", path): "send" for path in (
        "/modalities/{id}/store", "/modalities/{id}/store-straight", "/peers/{id}/store",
        "/peers/{id}/store-straight", "/instances/{id}/export")},
    ("POST", "/tools/pseudonyms"): "pseudonyms",
}
#: Reads that reveal no patient data: not recorded when they succeed.
QUIET = frozenset({
    "/system", "/statistics", "/changes", "/plugins", "/plugins/{name}", "/jobs", "/jobs/{id}",
    "/tools", "/tools/now", "/tools/now-local", "/tools/generate-uid", "/tools/default-encoding",
    "/tools/accepted-transfer-syntaxes", "/tools/accepted-sop-classes",
    "/tools/unknown-sop-class-accepted", "/tools/dicom-conformance", "/tools/log-level",
    "/tools/log-level-{category}", "/tools/metrics", "/tools/metrics-prometheus",
    "/modalities", "/peers", "/queries", "/tools/labels"})
#: Actions whose JSON body says what was asked (the query, the changes): kept, cut short.
BODY_ACTIONS = frozenset({"query", "modify", "anonymize", "send", "move", "get", "pseudonyms"})
BODY_LIMIT = 4096
LEVELS = {level.plural: level.title for level in Level}
MAX_LIMIT = 10000


class AuditTrail:
    """ASGI middleware: one audit entry per answered request."""

    def __init__(self, app: ASGIApp, server: Server) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.server.audit.enabled:
            await self.app(scope, receive, send)
            return
        status = 500  # unless the application answers
        body, reply = bytearray(), bytearray()  # their beginnings

        async def receiving() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < BODY_LIMIT:
                body.extend(message.get("body", b"")[:BODY_LIMIT - len(body)])
            return message

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif len(reply) < BODY_LIMIT:
                reply.extend(message.get("body", b"")[:BODY_LIMIT - len(reply)])
            await send(message)

        try:
            await self.app(scope, receiving, sending)
        finally:
            entry = rest_entry(Request(scope), status, bytes(body), bytes(reply))
            if entry is not None:
                self.server.audit.record(entry)


def rest_entry(request: Request, status: int, body: bytes, reply: bytes) -> AuditEntry | None:
    """The entry for an answered request; None for a quiet one."""
    found = request.scope.get(MATCH_KEY)  # access control found it, even for a refusal
    route, params = (found[0], found[1].get("path_params", {})) if found else (None, {})
    path = getattr(route, "path", None)
    if status < 400 and request.method in SAFE_METHODS \
            and (path in QUIET or isinstance(route, Mount)):
        return None
    action = classify(request.method, path, required_permission(request))
    details: dict[str, Any] = {"Method": request.method, "Uri": request.url.path}
    if request.url.query:
        details["Query"] = request.url.query
    if action in BODY_ACTIONS and body:
        details["Body"] = _body(body)
    principal = principal_of(request)
    resource = _resource(params, action, status, reply)
    return AuditEntry(time.time(), principal.name if principal else None,
                      principal.method if principal else "none",
                      request.client.host if request.client else "", action,
                      _level(request.url.path) if resource else None, resource, status,
                      details)


def _resource(params: dict[str, Any], action: str, status: int, reply: bytes) -> str | None:
    """The ID in the path; an upload's path names none, but Orthanc's answer does."""
    if action == "store" and status == 200:
        stored = _body(reply)
        return stored.get("ID") if isinstance(stored, dict) else None
    return params.get("id")


def classify(method: str, path: str | None, permission: str | None) -> str:
    """The action of ``method`` on the route ``path`` (None: no route matched): from
    ``ACTIONS``, else the permission's name ("read", "store", "write", "admin")."""
    method = "GET" if method == "HEAD" else method
    action = ACTIONS.get((method, path or ""))
    if action is not None:
        return action
    if permission is not None:
        return permission
    return "read" if method in SAFE_METHODS else "write"


def _level(path: str) -> str:
    """"Study" for /studies/..., else the collection ("modalities", "jobs"...)."""
    collection = path.strip("/").split("/", 1)[0]
    return LEVELS.get(collection, collection)


def _body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:  # cut short, or not JSON
        return body.decode("utf-8", "replace")


# -- the admin route --------------------------------------------------------------------


async def audit_log(request: Request) -> Response:
    """The most recent entries matching ``user``, ``action``, ``resource``, ``since`` and
    ``until`` (ISO 8601 times, UTC unless they say otherwise), at most ``limit``."""
    arguments = request.query_params
    unknown = set(arguments) - {"user", "action", "resource", "since", "until", "limit"}
    if unknown:
        raise BadRequest("unknown arguments: " + ", ".join(sorted(unknown)))
    limit = integer(request, "limit", 100)
    if not 0 < limit <= MAX_LIMIT:
        raise BadRequest(f'"limit" must be between 1 and {MAX_LIMIT}')
    where = AuditFilter(arguments.get("user"), arguments.get("action"),
                        arguments.get("resource"), _time(arguments, "since"),
                        _time(arguments, "until"), limit)
    audit = server_of(request).audit

    def search() -> list[AuditEntry]:
        audit.flush()  # what this process did up to now, too
        return audit.server.index.audit.search(where)

    return answer([_json(entry) for entry in await run_in_threadpool(search)])


def _time(arguments: Any, name: str) -> float | None:
    text = arguments.get(name)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f'"{name}" must be an ISO 8601 date or time, such as '
                         '2026-01-31T08:00:00Z') from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _json(entry: AuditEntry) -> dict[str, Any]:
    moment = datetime.fromtimestamp(entry.at, UTC).isoformat(timespec="milliseconds")
    return {"Seq": entry.seq, "Time": moment.replace("+00:00", "Z"), "Who": entry.who,
            "Via": entry.via, "RemoteIp": entry.remote_ip, "Action": entry.action,
            "Level": entry.level, "Resource": entry.resource, "Status": entry.status,
            "Details": entry.details}


def routes() -> list[PluginRoute]:
    return [PluginRoute(Route("/tools/audit-log", audit_log, methods=["GET"]),
                        permission="admin")]
