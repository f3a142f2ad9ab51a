"""One Lua state per process: the scripts of ``LuaScripts``, and the Orthanc Lua API.

lupa holds the state's lock for a whole call, Python callbacks included, so every entry
(callbacks, filters, ``/tools/execute-script``) goes through :meth:`LuaEngine.call`,
one at a time. A script's own REST calls run in-process and may reach the filters
again from another thread; those are recognised (a context variable travels with the
request) and skipped, as the instance comes from the scripts themselves.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lupa.lua54 as lupa

from lanthorn import BadRequest

from . import api

if TYPE_CHECKING:
    from lanthorn import Server

log = logging.getLogger(__name__)

#: Set while the scripts call the REST API: requests that carry it come from Lua.
FROM_LUA: contextvars.ContextVar[bool] = contextvars.ContextVar("from_lua", default=False)
#: The functions a script may define for the server to call, which ``has`` knows.
ENTRY_POINTS = (
    "OnHeartBeat", "OnStoredInstance", "OnStablePatient", "OnStableStudy", "OnStableSeries",
    "ReceivedInstanceFilter", "IncomingCStoreInstanceFilter", "IncomingHttpRequestFilter",
    "IncomingFindRequestFilter", "IncomingWorklistRequestFilter", "OutgoingFindRequestFilter",
    "OnJobSubmitted", "OnJobSuccess", "OnJobFailure")


class LuaEngine:
    """The process's Lua state, loaded with the configured scripts in order."""

    def __init__(self, server: Server) -> None:
        self.server = server
        # Lua strings are bytes (DICOM files travel through scripts): no encoding here;
        # text is UTF-8, with surrogate escapes so binary strings round-trip.
        self.runtime = lupa.LuaRuntime(unpack_returned_tuples=True, encoding=None)
        self._lock = threading.RLock()
        self._output: list[str] | None = None
        self._defined: frozenset[str] = frozenset()
        api.install(self)

    # -- loading and calling --------------------------------------------------------------

    def load(self, scripts: list[str], base_dir: Path) -> None:
        """Run each script once, in order; a broken script refuses start-up."""
        for name in scripts:
            path = Path(name) if Path(name).is_absolute() else base_dir / name
            try:
                code = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise BadRequest(f'LuaScripts: cannot read "{path}": {exc}') from None
            self.execute(code, f"@{path}")

    def execute(self, code: str, name: str = "=execute-script") -> str:
        """Run a chunk in the shared state; return what it printed."""
        with self._locked(), self._capture() as output:
            try:
                self.runtime.execute(encode(code), name=encode(name))
            except lupa.LuaError as exc:
                raise BadRequest(f"Lua error: {_first_line(exc)}") from None
            except Exception as exc:  # raised by an API function the script called
                raise BadRequest(f"Lua error: {type(exc).__name__}: {exc}") from None
        return "".join(output)

    def has(self, function: str) -> bool:
        """Whether the scripts define the entry point ``function`` (so its arguments are
        worth building). Known without the state's lock, which a long callback may hold:
        every HTTP request asks about its filter."""
        return function in self._defined

    def call(self, function: str, *args: Any) -> Any:
        """Call a global function if the scripts define it (else ``None``); a Lua error
        becomes ``LuaCallError`` naming the script's file and line."""
        with self._locked():
            target = self.runtime.globals()[encode(function)]
            if lupa.lua_type(target) != "function":
                return None
            try:
                return to_python(target(*(self.to_lua(a) for a in args)))
            except lupa.LuaError as exc:
                raise LuaCallError(f"{function}: {_first_line(exc)}") from None
            except Exception as exc:  # raised by an API function the script called
                raise LuaCallError(f"{function}: {type(exc).__name__}: {exc}") from None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The state, to one caller at a time; whatever the caller ran may have defined
        or removed entry points."""
        with self._lock:
            try:
                yield
            finally:
                functions = self.runtime.globals()
                self._defined = frozenset(name for name in ENTRY_POINTS if lupa.lua_type(
                    functions[encode(name)]) == "function")

    @contextmanager
    def _capture(self) -> Iterator[list[str]]:
        previous, self._output = self._output, []
        try:
            yield self._output
        finally:
            self._output = previous

    def print(self, text: str) -> None:
        """Lua's ``print``: to the caller of execute-script, else to the log."""
        if self._output is not None:
            self._output.append(text + "\n")
        else:
            log.info("Lua: %s", text)

    # -- values ---------------------------------------------------------------------------

    def to_lua(self, value: Any) -> Any:
        """JSON-like Python values as Lua values (lists numbered from 1, text as bytes)."""
        if isinstance(value, str):
            return encode(value)
        if isinstance(value, dict):
            return self.runtime.table_from({encode(str(k)): self.to_lua(v)
                                            for k, v in value.items()})
        if isinstance(value, list | tuple):
            return self.runtime.table_from([self.to_lua(v) for v in value])
        return value

    def parse_json(self, text: str) -> Any:
        try:
            return self.to_lua(json.loads(text))
        except json.JSONDecodeError as exc:
            raise BadRequest(f"ParseJson: not JSON ({exc})") from None


class LuaCallError(Exception):
    """A callback or filter raised a Lua error (the message names file and line)."""


def to_python(value: Any) -> Any:
    """Lua tables as lists (keys 1..n) or dicts, strings as str; other values as they are."""
    if isinstance(value, bytes):
        return decode(value)
    if lupa.lua_type(value) != "table":
        return value
    items = list(value.items())
    keys = [k for k, _ in items]
    if keys and keys == list(range(1, len(keys) + 1)):
        return [to_python(v) for _, v in items]
    return {str(to_python(k)): to_python(v) for k, v in items}


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _first_line(exc: Exception) -> str:
    return str(exc).split("\nstack traceback:", 1)[0]


