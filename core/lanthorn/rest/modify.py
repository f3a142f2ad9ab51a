"""``/modify``, ``/anonymize``, the bulk tools, a study's ``/split`` and ``/merge``; the
pseudonym look-up (administrators).

The work is ``lanthorn.modify``: these handlers parse the body, run the operation in a
thread, and shape the answer (a DICOM file for one instance, Orthanc's JSON otherwise).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import modify, studies
from ..errors import BadRequest, UnknownResource
from ..jobs import JobContext, JobType
from ..model import Level
from ..types import Origin, PluginRoute, permitted
from .common import (
    answer,
    asynchronous,
    job_answer,
    json_body,
    level_of,
    resource_of,
    server_of,
    text,
)

if TYPE_CHECKING:
    from ..index.sql import SqlIndex
    from ..server import Server


async def _body(request: Request) -> Any:
    data = await request.body()
    return json_body(data) if data.strip() else {}


def _origin(request: Request) -> Origin:
    return Origin("RestApi", remote_ip=request.client.host if request.client else "")


def resource_endpoint(*, anonymize: bool):  # noqa: ANN201 - a Starlette endpoint
    """``POST /{level}/{id}/modify|anonymize``: new resources, or one changed file."""

    async def endpoint(request: Request) -> Response:
        body = await _body(request)
        return await run_in_threadpool(_resource, request, body, anonymize)

    return endpoint


def _resource(request: Request, body: Any, anonymize: bool) -> Response:
    server = server_of(request)
    level = level_of(request)
    resource = resource_of(request, level)
    if level == Level.INSTANCE:
        if isinstance(body, dict) and asynchronous(body):
            raise BadRequest("a modified instance is answered as a file: it cannot be a job")
        parsed = modify.parse_request(server, body, anonymize=anonymize, level=level,
                                      resource=resource.public_id, origin=_origin(request))
        return Response(modify.modified_file(server, parsed, resource),
                        media_type="application/dicom")
    return _run(request, body, anonymize, level, resource.public_id)


def bulk_endpoint(*, anonymize: bool):  # noqa: ANN201 - a Starlette endpoint
    """``POST /tools/bulk-modify|bulk-anonymize``: ``Resources`` of any level."""

    async def endpoint(request: Request) -> Response:
        body = await _body(request)
        return await run_in_threadpool(_run, request, body, anonymize, None, None)

    return endpoint


def _run(request: Request, body: Any, anonymize: bool, level: Level | None,
         resource: str | None) -> Response:
    """Run the operation now, or (``Asynchronous``) as a "ResourceModification" job."""
    server = server_of(request)
    origin = _origin(request)
    parsed = modify.parse_request(server, body, anonymize=anonymize, level=level,
                                  resource=resource, origin=origin)
    if isinstance(body, dict) and asynchronous(body):
        return _submit(server, JOB_TYPE, body, {
            "Anonymize": anonymize, "Resource": resource,
            "Level": None if level is None else int(level), "Origin": dataclasses.asdict(origin)})
    return answer(modify.run(server, parsed))


def _submit(server: Server, job_type: JobType, body: dict[str, Any],
            parameters: dict[str, Any]) -> Response:
    """Run as a job: the body goes with it, to be parsed again when the job runs."""
    return job_answer(server.jobs.submit(job_type.name, {"Body": body, **parameters},
                                         priority=int(body.get("Priority", 0))))


def _run_job(context: JobContext) -> None:
    """Parse the request again (cheap, deterministic) and resume from the checkpoint."""
    parameters = context.parameters
    level = parameters["Level"]
    parsed = modify.parse_request(
        context.server, parameters["Body"], anonymize=parameters["Anonymize"],
        level=None if level is None else Level(level), resource=parameters["Resource"],
        origin=Origin(**parameters["Origin"]))
    context.content = modify.run(context.server, parsed, context.progress, context.checkpoint)


JOB_TYPE = JobType("ResourceModification", _run_job)


def study_endpoint(*, split: bool):  # noqa: ANN201 - a Starlette endpoint
    """``POST /studies/{id}/split|merge`` (see ``lanthorn.studies``)."""

    async def endpoint(request: Request) -> Response:
        body = await _body(request)
        return await run_in_threadpool(_study_operation, request, body, split)

    return endpoint


def _study_operation(request: Request, body: Any, split: bool) -> Response:
    server, origin = server_of(request), _origin(request)
    study = resource_of(request, Level.STUDY)
    parsed = (studies.parse_split if split else studies.parse_merge)(server, study, body, origin)
    if asynchronous(body):
        return _submit(server, SPLIT_JOB_TYPE if split else MERGE_JOB_TYPE, body,
                       {"Study": study.public_id, "Origin": dataclasses.asdict(origin)})
    return answer(studies.run(server, parsed, lambda _: None, split=split))


def _study_job(*, split: bool):  # noqa: ANN202 - a job's function
    def run_job(context: JobContext) -> None:
        parameters, server = context.parameters, context.server
        study = server.index.lookup(parameters["Study"], Level.STUDY)
        if study is None:
            raise UnknownResource(f"the study {parameters['Study']} does not exist any more")
        parsed = (studies.parse_split if split else studies.parse_merge)(
            server, study, parameters["Body"], Origin(**parameters["Origin"]))
        context.content = studies.run(server, parsed, context.progress, context.checkpoint,
                                      split=split)

    return run_job


SPLIT_JOB_TYPE = JobType("SplitStudy", _study_job(split=True))
MERGE_JOB_TYPE = JobType("MergeStudy", _study_job(split=False))


async def bulk_delete(request: Request) -> Response:
    body = await _body(request)
    resources = body.get("Resources") if isinstance(body, dict) else None
    if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
        raise BadRequest('"Resources" must be a list of resource IDs')
    await run_in_threadpool(modify.bulk_delete, server_of(request), resources)
    return text("")


async def pseudonyms(request: Request) -> Response:
    """Administrators only: the pseudonyms of one patient, by its original PatientID or
    by its pseudonym; ``"Delete": true`` forgets them (the patient then gets new ones)."""
    body = await _body(request)
    if not isinstance(body, dict):
        raise BadRequest("The body must contain a JSON object")
    scope, delete = body.get("Scope", ""), body.get("Delete", False)
    if not isinstance(scope, str) or not isinstance(delete, bool):
        raise BadRequest('"Scope" must be a string and "Delete" a boolean')
    patient, pseudonym = body.get("PatientID"), body.get("Pseudonym")
    given = patient if pseudonym is None else pseudonym
    if [patient, pseudonym].count(None) != 1 or not isinstance(given, str):
        raise BadRequest('give either "PatientID" (the original) or "Pseudonym" (a string)')
    return answer(await run_in_threadpool(_pseudonyms, server_of(request).index, scope,
                                          patient, pseudonym, delete))


def _pseudonyms(index: SqlIndex, scope: str, patient: str | None, pseudonym: str | None,
                delete: bool) -> dict[str, Any]:
    rows = index.pseudonyms_of(scope, patient=patient, pseudonym=pseudonym)
    deleted = 0
    if delete and rows:
        original = patient if patient is not None else \
            next(r["Original"] for r in rows if r["Kind"] == "PatientID")  # found by it
        deleted = index.delete_pseudonyms(scope, original)
    return {"Scope": scope, "Mappings": rows, "Deleted": deleted}


def routes() -> list[PluginRoute]:
    levels = "{level:lanthorn_level}"
    return [
        *permitted(
            "write",
            Route(f"/{levels}/{{id}}/modify", resource_endpoint(anonymize=False),
                  methods=["POST"]),
            Route(f"/{levels}/{{id}}/anonymize", resource_endpoint(anonymize=True),
                  methods=["POST"]),
            Route("/studies/{id}/split", study_endpoint(split=True), methods=["POST"]),
            Route("/studies/{id}/merge", study_endpoint(split=False), methods=["POST"]),
            Route("/tools/bulk-modify", bulk_endpoint(anonymize=False), methods=["POST"]),
            Route("/tools/bulk-anonymize", bulk_endpoint(anonymize=True), methods=["POST"]),
            Route("/tools/bulk-delete", bulk_delete, methods=["POST"])),
        # the pseudonym mapping links to real identities (PHI)
        *permitted("admin", Route("/tools/pseudonyms", pseudonyms, methods=["POST"])),
    ]
