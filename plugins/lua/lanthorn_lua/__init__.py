"""Orthanc-compatible Lua scripting for Lanthorn.

``LuaScripts`` are loaded in order into one Lua state per process. Callbacks
(``OnStoredInstance``, ``OnStable*``, ``OnDeleted*``, ``OnUpdated*``) are driven by the
change log, so in a cluster only the process delivering events runs them, once per
change; ``OnJob*`` run where the job event happens (once in the cluster too); filters
run in the process that receives the request; ``/tools/execute-script`` runs in the
process that serves the request.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import weakref
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import lanthorn
from lanthorn import ChangeType, DimseRequest, Level, PluginRoute, Rejected, Server
from lanthorn.auth import ANONYMOUS
from lanthorn.changes import LEASE, LEASE_SECONDS
from lanthorn.config import ConfigError
from lanthorn.dicom import ParsedInstance, dataset_json, element_string
from lanthorn.dimse.access import Modality
from lanthorn.dimse.remote import dataset_of
from lanthorn.dimse.request import WORKLIST
from lanthorn.errors import BadRequest, Forbidden
from lanthorn.index.records import Change
from lanthorn.model import format_tag
from lanthorn.types import Origin, Principal

from . import inprocess
from .api import delete_after_success
from .engine import FROM_LUA, LuaCallError, LuaEngine

__version__ = "0.1.0"

#: Orthanc keeps the Lua options at the top level; "Lua" is this plugin's own section.
config_sections = ("Lua", "LuaScripts", "LuaHeartBeatPeriod", "ExecuteLuaEnabled")

log = logging.getLogger(__name__)

_engines: weakref.WeakKeyDictionary[Server, LuaEngine] = weakref.WeakKeyDictionary()
_heartbeats: weakref.WeakKeyDictionary[Server, threading.Event] = weakref.WeakKeyDictionary()
_job_events: weakref.WeakKeyDictionary[Server, queue.SimpleQueue[tuple[str, str] | None]] = \
    weakref.WeakKeyDictionary()

_STABLE = {ChangeType.StablePatient: "OnStablePatient", ChangeType.StableStudy: "OnStableStudy",
           ChangeType.StableSeries: "OnStableSeries"}
#: Callbacks named after the level of the change's resource ("OnDeleted" + "Study").
_BY_LEVEL = {ChangeType.Deleted: "OnDeleted", ChangeType.UpdatedMetadata: "OnUpdated",
             ChangeType.UpdatedAttachment: "OnUpdated"}
_JOB_CALLBACKS = {ChangeType.JobSubmitted: "OnJobSubmitted", ChangeType.JobSuccess: "OnJobSuccess",
                  ChangeType.JobFailure: "OnJobFailure"}


def engine_of(server: Server) -> LuaEngine | None:
    """The server's Lua state (``None`` before start-up)."""
    return _engines.get(server)


@lanthorn.hookimpl
def startup(server: Server) -> None:
    scripts = server.config.get("LuaScripts") or []
    if not isinstance(scripts, list) or not all(isinstance(s, str) for s in scripts):
        raise ConfigError('"LuaScripts" must be a list of file names')
    engine = LuaEngine(server)
    base_dir = server.config.sources[0].parent if server.config.sources else Path.cwd()
    try:
        engine.load(scripts, base_dir)
        engine.call("Initialize")
    except (BadRequest, LuaCallError) as exc:
        raise ConfigError(f"LuaScripts: {exc}") from None
    _engines[server] = engine
    period = float(server.config.get("LuaHeartBeatPeriod") or 0)
    if period > 0 and engine.has("OnHeartBeat"):
        stop = _heartbeats[server] = threading.Event()
        threading.Thread(target=_beat, args=(server, engine, period, stop),
                         name="lanthorn-lua-heartbeat", daemon=True).start()
    events = _job_events[server] = queue.SimpleQueue()
    threading.Thread(target=_job_callbacks, args=(engine, events), name="lanthorn-lua-jobs",
                     daemon=True).start()


@lanthorn.hookimpl
def shutdown(server: Server) -> None:
    stop = _heartbeats.pop(server, None)
    if stop is not None:
        stop.set()
    events = _job_events.pop(server, None)
    if events is not None:
        events.put(None)
    engine = _engines.pop(server, None)
    if engine is not None:
        _logged(engine, "Finalize")


@lanthorn.hookimpl
def on_change(server: Server, change: Change) -> None:
    """The change's callback; a script error is logged and the change is not retried
    (the instance is stored whatever the script does)."""
    engine = _engines.get(server)
    if engine is None:
        return
    if change.change_type == ChangeType.NewInstance and engine.has("OnStoredInstance"):
        found = _resource(server, change)
        if found is not None:
            tags, metadata = found
            _logged(engine, "OnStoredInstance", change.public_id, tags, metadata,
                    _origin_table(_stored_origin(metadata)))
    elif change.change_type in _STABLE and engine.has(_STABLE[change.change_type]):
        found = _resource(server, change)
        if found is not None:
            _logged(engine, _STABLE[change.change_type], change.public_id, *found)
    elif change.change_type in _BY_LEVEL:
        _logged(engine, _BY_LEVEL[change.change_type] + change.level.title, change.public_id)


@lanthorn.hookimpl
def on_job_event(server: Server, job_id: str, event: ChangeType) -> None:
    """``OnJob*`` callbacks, from a thread of their own: a job submitted by a script
    arrives here while the Lua state is still busy with that script. A job that
    ``Delete`` was chained to deletes what it sent once it succeeds."""
    if event == ChangeType.JobSuccess:
        delete_after_success(server, job_id)
    events, engine = _job_events.get(server), _engines.get(server)
    if events is not None and engine is not None and engine.has(_JOB_CALLBACKS[event]):
        events.put((_JOB_CALLBACKS[event], job_id))


@lanthorn.hookimpl
def filter_incoming_instance(server: Server, instance: ParsedInstance,
                             origin: Origin) -> bool | None:
    """``ReceivedInstanceFilter`` and, for C-STORE, ``IncomingCStoreInstanceFilter``.

    Instances the scripts upload themselves are not filtered again (the Lua state is
    busy with the script that sends them).
    """
    engine = _engines.get(server)
    if engine is None or FROM_LUA.get():
        return None
    filters = [name for name in ("ReceivedInstanceFilter", "IncomingCStoreInstanceFilter")
               if engine.has(name) and (origin.kind == "DicomProtocol"
                                        or name == "ReceivedInstanceFilter")]
    if not filters:
        return None
    tags = dataset_json(instance.dataset, "simplify")
    info = {"TransferSyntaxUID": instance.transfer_syntax}
    for name in filters:
        try:
            verdict = engine.call(name, tags, _origin_table(origin), info)
        except LuaCallError as exc:
            raise Rejected(f"the Lua filter failed, instance refused: {exc}") from None
        status = not isinstance(verdict, bool) and isinstance(verdict, int | float)
        if verdict is False or (status and verdict != 0):  # or a non-zero DIMSE status
            raise Rejected(f"the Lua {name} refused this instance")
    return None


@lanthorn.hookimpl
def filter_http_request(server: Server, request: Request, principal: Principal) -> bool | None:
    """``IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)``: anything
    but a true value refuses (403), as in Orthanc; an error refuses too, saying why.
    The scripts' own ``RestApi*`` calls are not filtered."""
    engine = _engines.get(server)
    name = "IncomingHttpRequestFilter"
    if engine is None or FROM_LUA.get() or not engine.has(name):
        return None
    username = "" if principal is ANONYMOUS else principal.name
    ip = request.client.host if request.client else ""
    try:
        verdict = engine.call(name, request.method, request.url.path, ip, username,
                              dict(request.headers))
    except LuaCallError as exc:
        raise Forbidden(f"the Lua filter failed, request refused: {exc}") from None
    if verdict is None or verdict is False:
        raise Forbidden(f"the Lua {name} refused this request")
    return True


@lanthorn.hookimpl
def filter_find_request(server: Server, request: DimseRequest) -> None:
    """``IncomingFindRequestFilter(query, origin)``, or ``IncomingWorklistRequestFilter``
    for worklists: the query the script returns replaces the one received."""
    name = "IncomingWorklistRequestFilter" if request.sop_class == WORKLIST \
        else "IncomingFindRequestFilter"
    _filter_query(server, name, request.identifier, _origin_table(request.origin))


@lanthorn.hookimpl
def filter_outgoing_find_request(server: Server, modality: Modality, query: Dataset) -> None:
    """``OutgoingFindRequestFilter(query, modality)``; ``modality`` is the modality's
    configuration as ``/modalities/{id}/configuration`` shows it."""
    _filter_query(server, "OutgoingFindRequestFilter", query, modality.configuration())


def _filter_query(server: Server, name: str, query: Dataset, about: dict[str, Any]) -> None:
    """Orthanc's C-FIND filters: the query as ``{["0010,0020"] = "P*"}`` (sequences and
    binary values stay as they are), replaced by the table the script returns."""
    engine = _engines.get(server)
    if engine is None or FROM_LUA.get() or not engine.has(name):
        return
    flat = {e.tag: text for e in query
            if e.tag.group > 0x0002 and (text := element_string(e)) is not None}
    table = {format_tag(tag): text for tag, text in flat.items()}
    try:
        answer = engine.call(name, table, about)
    except LuaCallError as exc:
        raise Rejected(f"the Lua filter failed, query refused: {exc}") from None
    if not isinstance(answer, dict):
        raise Rejected(f"the Lua {name} returned no table")
    replaced = dataset_of(answer)  # BadRequest for a value that is no string
    for tag in flat:
        del query[tag]
    query.update(replaced)


@lanthorn.hookimpl
def register_routes(server: Server) -> list[PluginRoute]:
    async def execute_script(request: Request) -> Response:
        if not server.config.get("ExecuteLuaEnabled", False):
            raise Forbidden("execute-script is disabled: set \"ExecuteLuaEnabled\" to true")
        engine = _engines.get(server)
        if engine is None:
            raise BadRequest("the Lua engine is not started")
        code = (await request.body()).decode(errors="replace")
        return PlainTextResponse(await run_in_threadpool(engine.execute, code))

    return [PluginRoute(Route("/tools/execute-script", execute_script, methods=["POST"]),
                        permission="admin")]


def _beat(server: Server, engine: LuaEngine, period: float, stop: threading.Event) -> None:
    """``OnHeartBeat`` every ``period`` seconds, in the process delivering events (so
    once per cluster, like the callbacks)."""
    while not stop.wait(period):
        try:
            delivering = server.events is not None and server.index.acquire_lease(
                LEASE, server.identity, LEASE_SECONDS)
        except Exception:
            log.exception("Lua: cannot tell whether this process delivers events")
            continue
        if delivering:
            _logged(engine, "OnHeartBeat")


def _job_callbacks(engine: LuaEngine, events: queue.SimpleQueue[tuple[str, str] | None]
                   ) -> None:
    while (event := events.get()) is not None:
        _logged(engine, *event)


def _logged(engine: LuaEngine, function: str, *args: Any) -> None:
    try:
        engine.call(function, *args)
    except LuaCallError as exc:
        log.error("Lua: %s", exc)


def _resource(server: Server, change: Change) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Tags and metadata as Orthanc gives them to callbacks; ``None`` if already gone."""
    base = f"/{change.level.plural}/{change.public_id}"
    tags_uri = base + "/simplified-tags" if change.level == Level.INSTANCE else base
    answers = [inprocess.call(server.app, "GET", uri) for uri in
               (tags_uri, base + "/metadata?expand")]
    if any(status != 200 for status, _ in answers):
        return None
    tags, metadata = (json.loads(body) for _, body in answers)
    if change.level != Level.INSTANCE:
        tags = {**tags.get("PatientMainDicomTags", {}), **tags.get("MainDicomTags", {})}
    return tags, metadata


def _stored_origin(metadata: dict[str, Any]) -> Origin:
    """Where a stored instance came from, by its metadata."""
    return Origin(metadata.get("Origin", ""), metadata.get("RemoteIP", ""),
                  metadata.get("RemoteAET", ""), metadata.get("CalledAET", ""),
                  metadata.get("HttpUsername", ""))


def _origin_table(origin: Origin) -> dict[str, str]:
    """Orthanc's ``origin`` argument."""
    return {"RequestOrigin": origin.kind, "RemoteIp": origin.remote_ip,
            "RemoteAet": origin.remote_aet, "CalledAet": origin.called_aet,
            "HttpUsername": origin.username}
