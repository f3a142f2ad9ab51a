"""Small helpers shared by the REST modules: arguments, lookups, JSON answers."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..dicom import Mode
from ..errors import BadRequest, RangeNotSatisfiable, UnknownResource
from ..index.records import Resource
from ..model import Level

if TYPE_CHECKING:
    from ..server import Server


def server_of(request: Request) -> Server:
    return request.app.state.server


def flag(request: Request, name: str, default: bool = False) -> bool:
    """Orthanc's boolean arguments: ``?expand``, ``?expand=true``, ``?expand=0``..."""
    if name not in request.query_params:
        return default
    return request.query_params[name].lower() not in ("false", "0", "no")


def dicom_form(request: Request) -> Mode:
    """How a dataset is rendered: ``?simplify`` (by name), ``?short`` (by tag), or in full."""
    return "simplify" if flag(request, "simplify") else "short" if flag(request, "short") \
        else "full"


def integer(request: Request, name: str, default: int = 0) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f'the argument "{name}" must be an integer') from None
    if value < 0:
        raise BadRequest(f'the argument "{name}" must not be negative')
    return value


def level_of(request: Request) -> Level:
    return Level.parse(request.path_params["level"])


def resource_of(request: Request, level: Level | None = None) -> Resource:
    """The resource named in the path, or a 404 that says which one was not found."""
    level = level if level is not None else level_of(request)
    public_id = request.path_params["id"]
    found = server_of(request).index.lookup(public_id, level)
    if found is None:
        raise UnknownResource(f"{level.title} {public_id} does not exist")
    return found


def json_body(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("The body must contain a JSON object") from None


def timeout_option(body: Any) -> float | None:
    """A request body's ``Timeout`` in seconds (None when not given): how long to wait
    for a remote modality, instead of its own ``Timeout`` and ``DicomScuTimeout``."""
    value = body.get("Timeout") if isinstance(body, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise BadRequest('"Timeout" must be a number of seconds')
    return float(value)


def answer(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


def text(value: str, media_type: str = "text/plain") -> Response:
    return Response(value, media_type=media_type)


def asynchronous(options: dict[str, Any]) -> bool:
    """Orthanc's two ways of asking for a job instead of an answer."""
    return options.get("Asynchronous") is True or options.get("Synchronous") is False


def job_answer(job_id: str) -> JSONResponse:
    return answer({"ID": job_id, "Path": f"/jobs/{job_id}"})


def byte_range(header: str | None, size: int) -> tuple[int, int]:
    """``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` as a half-open interval."""
    if header is None:
        return 0, size
    unit, _, spec = header.partition("=")
    first, dash, last = spec.strip().partition("-")
    try:
        if unit.strip() != "bytes" or not dash or "," in spec:
            raise ValueError
        if not first:
            start, end = max(0, size - int(last)), size
        else:
            start, end = int(first), min(size, int(last) + 1) if last else size
    except ValueError:
        raise RangeNotSatisfiable(f'unsupported Range "{header}": use one "bytes=a-b"') from None
    if start >= end:
        raise RangeNotSatisfiable(f'Range "{header}" is outside the {size} bytes of the file')
    return start, end
