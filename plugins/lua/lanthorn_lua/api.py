"""The Orthanc Lua API: the global functions the scripts call.

REST functions answer ``nil`` on failure and log why, as in Orthanc, so a script can
test the result; sends are store jobs with retry, visible in ``/jobs``.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx2
from pydicom.uid import generate_uid

from lanthorn.index.jobs import PAUSED, PENDING, RETRY, RUNNING, SUCCESS
from lanthorn.model import STABLE_CHANGE
from lanthorn.rest.system import ORTHANC_API_VERSION

from . import inprocess

if TYPE_CHECKING:
    from lanthorn import Server

    from .engine import LuaEngine

log = logging.getLogger(__name__)


class HttpSettings:
    """``SetHttpCredentials`` / ``SetHttpTimeout``: shared by the Http* functions."""

    def __init__(self) -> None:
        self.auth: tuple[str, str] | None = None
        self.timeout = 10.0


def install(engine: LuaEngine) -> None:
    """Define the API's functions as globals of the engine's state."""
    from .engine import FROM_LUA, decode, encode, to_python

    lua = engine.runtime
    server = engine.server
    tostring = lua.globals().tostring
    http = HttpSettings()

    def rest_bytes(method: str, uri: str, body: Any = None, headers: Any = None
                   ) -> bytes | None:
        token = FROM_LUA.set(True)
        try:
            status, answer = inprocess.call(server.app, method, str(uri),
                                            _bytes(body) or b"", _headers(headers))
        finally:
            FROM_LUA.reset(token)
        if status < 400:
            return answer
        log.error("Lua: error in RestApi%s() for URI %s: HTTP %d %s", method.title(),
                  uri, status, answer[:200].decode(errors="replace"))
        return None

    def rest(method: str, uri: str, body: Any = None, headers: Any = None) -> Any:
        answer = rest_bytes(method, uri, body, headers)
        if answer is None or method == "DELETE":
            return answer is not None or None
        return answer

    def rest_json(method: str, uri: str, body: dict[str, Any]) -> Any:
        answer = rest(method, uri, json.dumps(body))
        return None if answer is None else json.loads(answer)

    def http_call(method: str, url: str, body: Any = None, headers: Any = None) -> Any:
        try:
            reply = httpx2.request(method, str(url), content=_bytes(body),
                                   headers=_headers(headers), auth=http.auth,
                                   timeout=http.timeout)
            reply.raise_for_status()
        except httpx2.HTTPError as exc:
            log.error("Lua: Http%s() on %s failed: %s", method.title(), url, exc)
            return None
        return reply.content if method != "DELETE" else True

    def send(kind: str, resource: str, target: str, options: dict[str, Any]) -> Any:
        answer = rest_json("POST", f"/{kind}/{quote(str(target), safe='')}/store",
                           {"Resources": [str(resource)], "Asynchronous": True, **options})
        return None if answer is None else answer["ID"]

    def send_to_modality(resource: str, modality: str, local_aet: Any = None,
                         timeout: Any = None) -> Any:
        options = {k: v for k, v in (("LocalAet", local_aet), ("Timeout", timeout)) if v}
        return send("modalities", resource, modality, options)

    def send_to_peer(resource: str, peer: str, timeout: Any = None) -> Any:
        return send("peers", resource, peer, {"Timeout": timeout} if timeout else {})

    def delete(resource: str) -> Any:
        found = server.index.lookup(str(resource))
        if found is not None:
            return rest("DELETE", f"/{found.level.plural}/{resource}")
        if server.index.jobs.get(str(resource)) is not None:  # Delete(SendToModality(...))
            return delete_when_sent(server, str(resource))
        log.error("Lua: Delete(): unknown resource %s", resource)
        return None

    def set_stable_status(resource: str, stable: Any) -> Any:
        """Orthanc's ``SetStableStatus(id, isStable)``: whether the status changed."""
        found = server.index.lookup(str(resource))
        if found is None or found.level not in STABLE_CHANGE or not isinstance(stable, bool):
            log.error("Lua: SetStableStatus(): %s is no patient, study or series, or the "
                      "status is no boolean", resource)
            return None
        return server.index.set_stable(found, stable)

    def modify_instance(instance: str, replacements: Any = None, removals: Any = None,
                        remove_private: Any = False) -> Any:
        """The modified copy, stored; its ID (the original stays, as in Orthanc)."""
        modified = rest_bytes("POST", f"/instances/{instance}/modify", json.dumps({
            "Replace": to_python(replacements) or {}, "Remove": to_python(removals) or [],
            "RemovePrivateTags": bool(remove_private), "Force": True}))
        if modified is None:
            return None
        stored = rest("POST", "/instances", modified)
        return None if stored is None else json.loads(stored)["ID"]

    def dump_json(value: Any, keep_strings: Any = False) -> str:
        del keep_strings  # values are passed through as Lua holds them
        return json.dumps(to_python(value))

    def set_credentials(user: str, password: str) -> None:
        http.auth = (str(user), str(password))

    def set_timeout(seconds: float) -> None:
        http.timeout = float(seconds)

    functions = {
        "print": lambda *args: engine.print(
            "\t".join(decode(tostring(engine.to_lua(a))) for a in args)),
        "PrintRecursive": lambda value: engine.print(
            json.dumps(to_python(value), indent=2, default=str)),
        "ParseJson": engine.parse_json,
        "DumpJson": dump_json,
        "RestApiGet": lambda uri, builtin=None, headers=None: rest("GET", uri, None, headers),
        "RestApiPost": lambda uri, body, builtin=None, headers=None: rest("POST", uri, body,
                                                                          headers),
        "RestApiPut": lambda uri, body, builtin=None, headers=None: rest("PUT", uri, body,
                                                                         headers),
        "RestApiDelete": lambda uri, builtin=None, headers=None: rest("DELETE", uri, None,
                                                                      headers),
        "HttpGet": lambda url, headers=None: http_call("GET", url, None, headers),
        "HttpPost": lambda url, body, headers=None: http_call("POST", url, body, headers),
        "HttpPut": lambda url, body, headers=None: http_call("PUT", url, body, headers),
        "HttpDelete": lambda url, headers=None: http_call("DELETE", url, None, headers),
        "SetHttpCredentials": set_credentials,
        "SetHttpTimeout": set_timeout,
        "GetOrthancConfiguration": lambda: engine.to_lua(
            {key: server.config.get(key) for key in sorted(server.config.user_keys())}),
        "GenerateDicomUid": lambda: str(generate_uid()),
        "GetOrthancVersion": lambda: ORTHANC_API_VERSION,
        "SendToModality": send_to_modality,
        "SendToPeer": send_to_peer,
        "Delete": delete,
        "SetStableStatus": set_stable_status,
        "ModifyInstance": modify_instance,
    }
    for name, function in functions.items():
        lua.globals()[encode(name)] = _bridged(engine, function)


#: Set in a store job's parameters by ``Delete(job)``: delete what it sent once it succeeds.
DELETE_AFTER_SUCCESS = "LuaDeleteAfterSuccess"


def delete_when_sent(server: Server, job_id: str) -> bool:
    """``Delete(SendToModality(id, ...))``: the send is a job, so the deletion waits for
    its success, recorded in the job (any process may run it, even after a restart)."""
    jobs = server.index.jobs
    record = jobs.get(job_id)
    if record is None or "Resources" not in record.parameters:
        log.error("Lua: Delete(): job %s sends nothing that could be deleted", job_id)
        return False
    marked = {**record.parameters, DELETE_AFTER_SUCCESS: True}
    if jobs.update(job_id, expect=(PENDING, RUNNING, RETRY, PAUSED), parameters=marked):
        return True
    delete_after_success(server, job_id, force=True)  # it ended meanwhile
    return True


def delete_after_success(server: Server, job_id: str, *, force: bool = False) -> None:
    """Delete the resources a successful store job sent, if ``Delete`` asked for it."""
    record = server.index.jobs.get(job_id)
    if record is None or not (force or record.parameters.get(DELETE_AFTER_SUCCESS)):
        return
    if record.state != SUCCESS:
        log.warning("Lua: job %s did not succeed (%s): what it should send is kept", job_id,
                    record.state)
        return
    for public_id in record.parameters["Resources"]:
        found = server.index.lookup(public_id)
        if found is not None:
            server.delete(found)


def _bridged(engine: LuaEngine, function: Any) -> Any:
    """``function`` as Lua calls it: Lua strings arrive as str, results leave as Lua values."""
    from .engine import to_python

    def bridge(*args: Any) -> Any:
        return engine.to_lua(function(*(to_python(a) if isinstance(a, bytes) else a
                                        for a in args)))

    return bridge


def _headers(table: Any) -> dict[str, str]:
    from .engine import to_python

    found = to_python(table) if table is not None else {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _bytes(body: Any) -> bytes | None:
    from .engine import encode

    if body is None:
        return None
    return encode(body) if isinstance(body, str) else bytes(body)
