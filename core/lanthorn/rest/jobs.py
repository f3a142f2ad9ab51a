"""``/jobs``: Orthanc's view of jobs, from any process (jobs live in the index)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import InexistentItem, orthanc_error_description
from ..index.jobs import JobRecord
from ..storage import read_chunks
from ..types import PluginRoute, permitted
from .common import answer, flag, server_of
from .streaming import streamed

#: The control verbs, each a method of ``JobEngine``.
ACTIONS = ("cancel", "pause", "resume", "resubmit")


def describe(record: JobRecord) -> dict[str, Any]:
    """A job as Orthanc's ``GET /jobs/{id}`` shows it."""
    described = {
        "Content": record.content,
        "CreationTime": _timestamp(record.created),
        "EffectiveRuntime": round(record.runtime, 3),
        "ErrorCode": record.error_code,
        "ErrorDescription": orthanc_error_description(record.error_code),
        "ErrorDetails": record.error_details,
        "ID": record.id,
        "Priority": record.priority,
        "Progress": round(100 * record.progress),
        "State": record.state,
        "Timestamp": _timestamp(time.time()),
        "Type": record.job_type,
    }
    if record.completed is not None:
        described["CompletionTime"] = _timestamp(record.completed)
    return dict(sorted(described.items()))


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y%m%dT%H%M%S.%f")


def _job(request: Request) -> JobRecord:
    job_id = request.path_params["id"]
    record = server_of(request).index.jobs.get(job_id)
    if record is None:
        raise InexistentItem(f"unknown job {job_id}")
    return record


def list_jobs(request: Request) -> Response:
    records = server_of(request).index.jobs.all()
    if flag(request, "expand"):
        return answer([describe(r) for r in records])
    return answer([r.id for r in records])


def get_job(request: Request) -> Response:
    return answer(describe(_job(request)))


def delete_job(request: Request) -> Response:
    server_of(request).jobs.delete(request.path_params["id"])
    return answer({})


def control(action: str):  # noqa: ANN201 - a Starlette endpoint
    """``POST /jobs/{id}/<action>``: the engine's method of that name."""

    async def endpoint(request: Request) -> Response:
        method = getattr(server_of(request).jobs, action)
        await run_in_threadpool(method, request.path_params["id"])
        return answer({})

    return endpoint


def get_output(request: Request) -> Response:
    record, key = _job(request), request.path_params["key"]
    output = record.outputs.get(key)
    if output is None:
        raise InexistentItem(f'job {record.id} has no output "{key}"')
    headers = {"Content-Length": str(output["size"]),
               "Content-Disposition": f'attachment; filename="{output["filename"]}"'}
    return streamed(read_chunks(server_of(request).storage, output["uuid"], 0),
                    media_type=output["media_type"], headers=headers)


def delete_output(request: Request) -> Response:
    server_of(request).jobs.delete_output(request.path_params["id"], request.path_params["key"])
    return answer({})


def routes() -> list[PluginRoute]:
    return [
        *permitted("read",
                   Route("/jobs", list_jobs, methods=["GET"]),
                   Route("/jobs/{id}", get_job, methods=["GET"]),
                   Route("/jobs/{id}/{key}", get_output, methods=["GET"])),
        *permitted("write",
                   Route("/jobs/{id}", delete_job, methods=["DELETE"]),
                   *(Route(f"/jobs/{{id}}/{action}", control(action), methods=["POST"])
                     for action in ACTIONS),
                   Route("/jobs/{id}/{key}", delete_output, methods=["DELETE"])),
    ]
