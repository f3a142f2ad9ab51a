"""Orthanc-compatible Lua scripting for Lanthorn.

``LuaScripts`` are loaded in order into one Lua state per process. Callbacks
(``OnStoredInstance``, ``OnStable*``, ``OnDeleted*``) are driven by the change log, so
in a cluster only the process delivering events runs them, once per change; filters
run in the process that receives the instance; ``/tools/execute-script`` runs in the
process that serves the request.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import lanthorn
from lanthorn import ChangeType, Level, PluginRoute, Rejected, Server
from lanthorn.changes import LEASE, LEASE_SECONDS
from lanthorn.config import ConfigError
from lanthorn.dicom import ParsedInstance, dataset_json
from lanthorn.errors import BadRequest, Forbidden
from lanthorn.index.records import Change
from lanthorn.types import Origin

from . import inprocess
from .engine import FROM_LUA, LuaCallError, LuaEngine

__version__ = "0.1.0"

#: Orthanc keeps the Lua options at the top level; "Lua" is this plugin's own section.
config_sections = ("Lua", "LuaScripts", "LuaHeartBeatPeriod", "ExecuteLuaEnabled")

log = logging.getLogger(__name__)

_engines: weakref.WeakKeyDictionary[Server, LuaEngine] = weakref.WeakKeyDictionary()
_heartbeats: weakref.WeakKeyDictionary[Server, threading.Event] = weakref.WeakKeyDictionary()

_STABLE = {ChangeType.StablePatient: "OnStablePatient", ChangeType.StableStudy: "OnStableStudy",
           ChangeType.StableSeries: "OnStableSeries"}


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


@lanthorn.hookimpl
def shutdown(server: Server) -> None:
    stop = _heartbeats.pop(server, None)
    if stop is not None:
        stop.set()
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
                    _origin_table(metadata))
    elif change.change_type in _STABLE and engine.has(_STABLE[change.change_type]):
        found = _resource(server, change)
        if found is not None:
            _logged(engine, _STABLE[change.change_type], change.public_id, *found)
    elif change.change_type == ChangeType.Deleted:
        _logged(engine, f"OnDeleted{change.level.name.title()}", change.public_id)


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
    origin_table = {"RequestOrigin": origin.kind, "RemoteIp": origin.remote_ip,
                    "RemoteAet": origin.remote_aet, "CalledAet": origin.called_aet,
                    "HttpUsername": origin.username}
    info = {"TransferSyntaxUID": instance.transfer_syntax}
    for name in filters:
        try:
            verdict = engine.call(name, tags, origin_table, info)
        except LuaCallError as exc:
            raise Rejected(f"the Lua filter failed, instance refused: {exc}") from None
        status = not isinstance(verdict, bool) and isinstance(verdict, int | float)
        if verdict is False or (status and verdict != 0):  # or a non-zero DIMSE status
            raise Rejected(f"the Lua {name} refused this instance")
    return None


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


def _logged(engine: LuaEngine, function: str, *args: Any) -> None:
    try:
        engine.call(function, *args)
    except LuaCallError as exc:
        log.error("Lua: %s", exc)


def _resource(server: Server, change: Change) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Tags and metadata as Orthanc gives them to callbacks; ``None`` if already gone."""
    base = f"/{change.level.name.lower()}s/{change.public_id}"
    tags_uri = base + "/simplified-tags" if change.level == Level.INSTANCE else base
    answers = [inprocess.call(server.app, "GET", uri) for uri in
               (tags_uri, base + "/metadata?expand")]
    if any(status != 200 for status, _ in answers):
        return None
    tags, metadata = (json.loads(body) for _, body in answers)
    if change.level != Level.INSTANCE:
        tags = {**tags.get("PatientMainDicomTags", {}), **tags.get("MainDicomTags", {})}
    return tags, metadata


def _origin_table(metadata: dict[str, Any]) -> dict[str, str]:
    return {"RequestOrigin": metadata.get("Origin", ""),
            "RemoteIp": metadata.get("RemoteIP", ""),
            "RemoteAet": metadata.get("RemoteAET", ""),
            "CalledAet": metadata.get("CalledAET", ""),
            "HttpUsername": metadata.get("HttpUsername", "")}
