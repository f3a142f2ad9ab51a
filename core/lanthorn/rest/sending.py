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
    #: ``check(server, options, target)`` refuses bad options (BadRequest) before
    #: anything is sent or queued as a job.
    check: Callable[[Any, dict[str, Any], dict[str, Any]], None] = lambda *_: None

    def start(self, server: Server, body: bytes, target: dict[str, Any]) -> Response:
        """Answer a store request: the report when done, or ``{ID, Path}`` of its job.

        ``target`` names the destination in the job's parameters (e.g. the modality).
        """
        resources, options = store_request(body)
        parameters = self._parameters(server, resources, options, target)
        if asynchronous(options):
            return job_answer(self._submit(server, parameters))
        checkpoint: dict[str, Any] = {}
        self.send(server, parameters, checkpoint, None)
        return answer(self.report(server, parameters, checkpoint))

    def submit(self, server: Server, resources: list[str], target: dict[str, Any],
               options: dict[str, Any] | None = None) -> str:
        """Queue a store job for ``resources`` (public IDs); its ID. How plugins send:
        network failures are retried and the job stays visible in ``/jobs``."""
        return self._submit(server, self._parameters(server, resources, options or {}, target))

    def _parameters(self, server: Server, resources: list[str], options: dict[str, Any],
                    target: dict[str, Any]) -> dict[str, Any]:
        self.check(server, options, target)
        for public_id in resources:
            if server.index.lookup(public_id) is None:
                raise UnknownResource(f"resource {public_id} does not exist")
        return {**options, **target, "Resources": resources,
                "Instances": server.index.instances_under(resources)}

    def _submit(self, server: Server, parameters: dict[str, Any]) -> str:
        return server.jobs.submit(self.job_type, parameters,
                                  content=self.report(server, parameters, {}),
                                  priority=int(parameters.get("Priority", 0)))

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


def advance(server: Server, parameters: dict[str, Any], checkpoint: dict[str, Any],
            stored: bool, progress: Callable[[float], None] | None, *, remote: str,
            size: int = 0) -> None:
    """Count one more instance done (and whether it failed) in the checkpoint; with
    ``LogExportedResources``, record a stored one in ``/exports`` as sent to ``remote``."""
    instances = parameters["Instances"]
    done = checkpoint.get("Next", 0)
    if stored and server.config["LogExportedResources"]:
        server.index.log_export(instances[done], remote)
    checkpoint["Next"] = done + 1
    checkpoint["Failed"] = checkpoint.get("Failed", 0) + (not stored)
    checkpoint["Size"] = checkpoint.get("Size", 0) + size
    if progress is not None:
        progress(checkpoint["Next"] / len(instances))


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
