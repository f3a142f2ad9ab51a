"""Sending stored resources elsewhere (a DICOM modality, an Orthanc peer), now or as a
job that retries network failures and resumes from a checkpoint.

A :class:`Destination` says how to send the instances of one request and how to report
on it; everything else (Orthanc's request bodies, the synchronous or asynchronous
answer, the job and its progress) is shared here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from ..errors import BadRequest, UnknownResource
from ..jobs import JobContext, JobType
from ..model import Level
from .common import answer, asynchronous, job_answer

if TYPE_CHECKING:
    from ..server import Server

#: ``send(server, parameters, checkpoint, progress)``: send ``parameters["Instances"]``
#: from ``checkpoint["Next"]`` on, advancing the checkpoint after each instance.
Send = Callable[[Any, dict[str, Any], dict[str, Any], Callable[[float], None] | None], None]
#: ``report(server, parameters, checkpoint)``: Orthanc's answer (or job content).
Report = Callable[[Any, dict[str, Any], dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Destination:
    job_type: str
    send: Send
    report: Report

    def start(self, server: Server, body: bytes, target: dict[str, Any]) -> Response:
        """Answer a store request: the report when done, or ``{ID, Path}`` of its job.

        ``target`` names the destination in the job's parameters (e.g. the modality).
        """
        resources, options = store_request(body)
        for public_id in resources:
            if server.index.lookup(public_id) is None:
                raise UnknownResource(f"resource {public_id} does not exist")
        parameters = {**options, **target, "Resources": resources,
                      "Instances": instances_under(server, resources)}
        if asynchronous(options):
            job_id = server.jobs.submit(self.job_type, parameters,
                                        content=self.report(server, parameters, {}),
                                        priority=int(options.get("Priority", 0)))
            return job_answer(job_id)
        checkpoint: dict[str, Any] = {}
        self.send(server, parameters, checkpoint, None)
        return answer(self.report(server, parameters, checkpoint))

    def job(self) -> JobType:
        """The job type: sends with progress, retried on network failures."""

        def run(context: JobContext) -> None:
            server, parameters, checkpoint = context.server, context.parameters, \
                context.checkpoint

            def progress(fraction: float) -> None:
                context.content = self.report(server, parameters, checkpoint)
                context.progress(fraction)

            try:
                self.send(server, parameters, checkpoint, progress)
            finally:
                context.content = self.report(server, parameters, checkpoint)

        return JobType(self.job_type, run, retry=True)


def advance(checkpoint: dict[str, Any], total: int, stored: bool,
            progress: Callable[[float], None] | None, size: int = 0) -> None:
    """Count one more instance done (and whether it failed) in the checkpoint."""
    checkpoint["Next"] = checkpoint.get("Next", 0) + 1
    checkpoint["Failed"] = checkpoint.get("Failed", 0) + (not stored)
    checkpoint["Size"] = checkpoint.get("Size", 0) + size
    if progress is not None:
        progress(checkpoint["Next"] / total)


def store_request(body: bytes) -> tuple[list[str], dict[str, Any]]:
    """Orthanc's three bodies: an object with "Resources", a list of IDs, or one bare ID."""
    text = body.decode(errors="replace").strip()
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        parsed = text
    options = parsed if isinstance(parsed, dict) else {}
    if isinstance(parsed, dict):
        if "Resources" not in parsed:
            raise BadRequest('Missing field in JSON: "Resources"')
        parsed = parsed["Resources"]
    resources = [parsed] if isinstance(parsed, str) else parsed
    if not isinstance(resources, list) or not all(isinstance(r, str) and r for r in resources):
        raise BadRequest('"Resources" must be a list of Orthanc identifiers')
    return resources, options


def instances_under(server: Server, public_ids: list[str]) -> list[str]:
    """The instances under the given resources, in index order (deleted ones skipped)."""
    ids: list[int] = []
    for public_id in public_ids:
        resource = server.index.lookup(public_id)
        if resource is not None:
            ids += server.index.descendants(resource.id, Level.INSTANCE)
    return server.index.public_ids_of(ids)
