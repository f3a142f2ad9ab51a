"""Query/retrieve of remote modalities over REST: ``/modalities/{id}/query|move|find-*``
and ``/queries/*``, in Orthanc's shapes.

A query's answers are kept in the index (``QueryRetrieveSize`` of them), so that any
process serves ``/queries/{id}``. Retrievals are C-MOVEs or C-GETs (``RetrieveMethod``,
``DicomDefaultRetrieveMethod``), run during the request or as "DicomMoveScu" or
"DicomGetScu" jobs that retry when the modality cannot be reached.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..dicom import Mode, dataset_json
from ..dimse import remote
from ..dimse.access import modality_named
from ..dimse.request import WORKLIST
from ..errors import BadRequest, DimseFailure, UnknownResource
from ..index.queries import QueryRecord
from ..jobs import JobContext, JobType
from ..model import Level, format_tag
from ..types import PluginRoute, permitted
from .common import (
    answer,
    asynchronous,
    dicom_form,
    job_answer,
    json_body,
    server_of,
    text,
    timeout_option,
)
from .modalities import modality_for, modality_of

if TYPE_CHECKING:
    from ..dimse.access import Modality
    from ..server import Server

log = logging.getLogger(__name__)

#: What one can do with an answer, by its level (``GET /queries/{id}/answers/{index}``).
CHILD_QUERIES = {
    Level.PATIENT: ("query-studies", "query-series", "query-instances"),
    Level.STUDY: ("query-series", "query-instances"),
    Level.SERIES: ("query-instances",),
    Level.INSTANCE: (),
}


# -- asking -------------------------------------------------------------------------------

async def query(request: Request) -> Response:
    body = _object(await request.body())
    modality = modality_for(modality_of(request), body)
    level = _level(body.get("Level"))
    asked = remote.dataset_of(_mapping(body.get("Query", {}), "Query"))
    if body.get("Normalize", True):
        asked = _normalized(server_of(request), asked, level)
    record = await run_in_threadpool(_run_query, server_of(request), modality, level, asked,
                                     timeout_option(body))
    return answer({"ID": record.id, "Path": f"/queries/{record.id}"})


def _run_query(server: Server, modality: Modality, level: Level, asked: Dataset,
               timeout: float | None) -> QueryRecord:
    answers = remote.find(server, modality, remote.identifier(asked, level),
                          remote.find_model(level), timeout)
    record = QueryRecord(str(uuid.uuid4()), modality.name, level, asked.to_json_dict(),
                         [a.to_json_dict() for a in answers], time.time())
    server.index.queries.create(record, int(server.config["QueryRetrieveSize"]))
    return record


def _normalized(server: Server, asked: Dataset, level: Level) -> Dataset:
    """Without the main tags of lower levels, which a query at ``level`` cannot match."""
    kept = Dataset()
    for element in asked:
        owner = server.main_tags.level_of(element.tag)
        if owner is None or owner <= level:
            kept.add(element)
    return kept


async def find_level(request: Request) -> Response:
    """The deprecated ``/modalities/{id}/find-<level>``: a flat query, simplified answers
    with the level's main tags."""
    body = _object(await request.body())
    level = Level.parse(request.url.path.rsplit("find-", 1)[1])
    asked = remote.dataset_of(_mapping(body, "The body"))
    answers = await run_in_threadpool(_find_main_tags, server_of(request),
                                      modality_of(request), level, asked)
    return answer([dataset_json(a, "simplify") for a in answers])


async def find_hierarchy(request: Request) -> Response:
    """The deprecated ``/modalities/{id}/find``: the patients a query matches, each with
    its ``Studies``, each with its ``Series`` (one C-FIND per level and parent)."""
    asked = remote.dataset_of(_mapping(_object(await request.body()), "The body"))
    return answer(await run_in_threadpool(_hierarchy, server_of(request),
                                          modality_of(request), asked))


def _hierarchy(server: Server, modality: Modality, asked: Dataset) -> list[dict[str, Any]]:
    def below(level: Level, parent: Dataset, key: str) -> list[Dataset]:
        return _find_main_tags(server, modality, level,
                               remote.dataset_of({key: str(parent.get(key, ""))}))

    patients = []
    for patient in _find_main_tags(server, modality, Level.PATIENT, asked):
        studies = [{**dataset_json(study, "simplify"),
                    "Series": [dataset_json(series, "simplify") for series in
                               below(Level.SERIES, study, "StudyInstanceUID")]}
                   for study in below(Level.STUDY, patient, "PatientID")]
        patients.append({**dataset_json(patient, "simplify"), "Studies": studies})
    return patients


def _find_main_tags(server: Server, modality: Modality, level: Level,
                    asked: Dataset) -> list[Dataset]:
    """C-FIND at ``level`` asking for the level's main tags too, as Orthanc does."""
    query = remote.dataset_of({format_tag(tag): "" for tag in server.main_tags.by_level[level]
                               if tag not in asked})
    query.update(asked)
    return remote.find(server, modality, remote.identifier(query, level),
                       remote.find_model(level))


async def find_worklist(request: Request) -> Response:
    """Modality Worklist C-FIND: ``{"Query": {...}, "Short"|"Full"}`` or a flat query."""
    body = _object(await request.body())
    flat = {k: v for k, v in body.items() if k not in ("Short", "Full")}
    asked = remote.dataset_of(_mapping(body.get("Query", flat), "Query"))
    answers = await run_in_threadpool(remote.find, server_of(request), modality_of(request),
                                      asked, WORKLIST)
    return answer([dataset_json(a, _body_form(body)) for a in answers])


# -- queries ------------------------------------------------------------------------------

def _query(request: Request) -> QueryRecord:
    query_id = request.path_params["id"]
    record = server_of(request).index.queries.get(query_id)
    if record is None:
        raise UnknownResource(f"unknown query {query_id}")
    return record


def _answer(request: Request) -> tuple[QueryRecord, Dataset]:
    record = _query(request)
    index = request.path_params["index"]
    if not index.isdigit() or int(index) >= len(record.answers):
        raise BadRequest(f"query {record.id} has {len(record.answers)} answers, no answer "
                         f"{index}")
    return record, Dataset.from_json(record.answers[int(index)])


def list_queries(request: Request) -> Response:
    return answer(server_of(request).index.queries.ids())


def query_operations(request: Request) -> Response:
    _query(request)
    return answer(["answers", "level", "modality", "query", "retrieve"])


def delete_query(request: Request) -> Response:
    if not server_of(request).index.queries.delete(request.path_params["id"]):
        raise UnknownResource(f"unknown query {request.path_params['id']}")
    return answer({})


def list_answers(request: Request) -> Response:
    record = _query(request)
    if "expand" in request.query_params:
        mode = dicom_form(request)
        return answer([dataset_json(Dataset.from_json(a), mode) for a in record.answers])
    return answer([str(number) for number in range(len(record.answers))])


def answer_operations(request: Request) -> Response:
    record, _ = _answer(request)
    return answer(["content", "retrieve", *CHILD_QUERIES[record.level]])


def answer_content(request: Request) -> Response:
    _, found = _answer(request)
    return answer(dataset_json(found, dicom_form(request)))


def query_level(request: Request) -> Response:
    return text(_query(request).level.title)


def query_modality(request: Request) -> Response:
    return text(_query(request).modality)


def query_arguments(request: Request) -> Response:
    return answer(dataset_json(Dataset.from_json(_query(request).query), dicom_form(request)))


def child_query(child: Level):  # noqa: ANN201 - a Starlette endpoint
    """``/queries/{id}/answers/{index}/query-<child>``: a new query under one answer."""

    async def endpoint(request: Request) -> Response:
        record, parent = _answer(request)
        if child <= record.level:
            raise BadRequest(f"a {record.level.title.lower()} has no child "
                             f"{child.plural}")
        body = _object(await request.body())
        asked = remote.dataset_of(_mapping(body.get("Query", {}), "Query"))
        for keyword in remote.RETRIEVE_KEYS[1:]:
            if keyword in parent and keyword not in asked and parent.data_element(keyword).value:
                setattr(asked, keyword, parent.data_element(keyword).value)
        server = server_of(request)
        modality = modality_named(server, record.modality)
        created = await run_in_threadpool(_run_query, server, modality, child, asked,
                                          timeout_option(body))
        return answer({"ID": created.id, "Path": f"/queries/{created.id}"})

    return endpoint


# -- retrieving ---------------------------------------------------------------------------

async def retrieve_answers(request: Request) -> Response:
    """``POST /queries/{id}[/answers/{index}]/retrieve``: C-MOVE the answer(s)."""
    if "index" in request.path_params:
        record, one = _answer(request)
        answers = [one]
    else:
        record = _query(request)
        answers = [Dataset.from_json(a) for a in record.answers]
    options = _retrieve_options(await request.body())
    identifiers = [remote.retrieve_identifier(a) for a in answers]
    return await run_in_threadpool(_retrieve, server_of(request), record.modality,
                                   identifiers, options)


def retrieve_resources(method: str):  # noqa: ANN201 - a Starlette endpoint
    """``POST /modalities/{id}/move`` and ``/get``: retrieve the ``Resources`` at
    ``Level`` (each a query of unique keys) by C-MOVE or C-GET."""

    async def endpoint(request: Request) -> Response:
        options = _object(await request.body())
        level = _level(options.get("Level"))
        resources = options.get("Resources")
        if not isinstance(resources, list) or not resources:
            raise BadRequest('"Resources" must be a non-empty list of queries')
        identifiers = []
        for resource in resources:
            found = remote.dataset_of(_mapping(resource, "Each resource"))
            found.QueryRetrieveLevel = remote.level_name(level)
            identifiers.append(found)
        modality = modality_of(request)
        return await run_in_threadpool(_retrieve, server_of(request), modality.name,
                                       identifiers, {**options, "RetrieveMethod": method},
                                       {} if method == "C-MOVE" else None)

    return endpoint


def _retrieve(server: Server, modality_name: str, identifiers: list[Dataset],
              options: dict[str, Any], sync_answer: dict[str, Any] | None = None) -> Response:
    method = str(options.get("RetrieveMethod") or server.config["DicomDefaultRetrieveMethod"])
    if method.upper() not in RETRIEVE_JOBS:
        raise BadRequest('"RetrieveMethod" must be "C-MOVE" or "C-GET"')
    parameters = {
        "Modality": modality_name,
        "Method": method.upper(),
        "TargetAet": str(options.get("TargetAet") or server.config["DicomAet"]),
        "LocalAet": options.get("LocalAet", ""),
        "Timeout": timeout_option(options),
        "Permissive": options.get("Permissive") is True,
        "Identifiers": [i.to_json_dict() for i in identifiers],
        "Form": "simplify" if options.get("Simplify") else
                "full" if options.get("Full") else "short",
    }
    if asynchronous(options):
        return job_answer(server.jobs.submit(RETRIEVE_JOBS[parameters["Method"]], parameters,
                                             content=retrieve_report(server, parameters),
                                             priority=int(options.get("Priority", 0))))
    run_retrievals(server, parameters, {})
    return answer(retrieve_report(server, parameters) if sync_answer is None else sync_answer)


def run_retrievals(server: Server, parameters: dict[str, Any], checkpoint: dict[str, int],
                   progress: Callable[[float], None] | None = None) -> None:
    """The C-MOVEs or C-GETs of a retrieval, one identifier after the other, from the
    checkpoint. With ``Permissive``, one the modality answers with a failure is logged
    and skipped (as Orthanc); a lost association still stops the retrieval."""
    modality = modality_for(modality_named(server, parameters["Modality"]), parameters)
    identifiers = parameters["Identifiers"]
    checkpoint.setdefault("Next", 0)
    while checkpoint["Next"] < len(identifiers):
        found = Dataset.from_json(identifiers[checkpoint["Next"]])
        try:
            if parameters["Method"] == "C-GET":
                remote.get(server, modality, found, parameters["Timeout"])
            else:
                remote.move(server, modality, found, remote.move_model(remote.level_of(found)),
                            parameters["TargetAet"], parameters["Timeout"])
        except DimseFailure as exc:
            if not parameters.get("Permissive"):
                raise
            log.warning("retrieval %d of %d skipped (Permissive): %s", checkpoint["Next"] + 1,
                        len(identifiers), exc.message)
        checkpoint["Next"] += 1
        if progress is not None:
            progress(checkpoint["Next"] / len(identifiers))


def retrieve_report(server: Server, parameters: dict[str, Any]) -> dict[str, Any]:
    """Orthanc's account of a retrieval (the answer, or the job's content)."""
    modality = modality_for(modality_named(server, parameters["Modality"]), parameters)
    return {"Description": "REST API",
            "LocalAet": modality.local_aet or server.config["DicomAet"],
            "Query": [dataset_json(Dataset.from_json(i), parameters["Form"])
                      for i in parameters["Identifiers"]],
            "RemoteAet": modality.aet}


def _run_retrieve_job(context: JobContext) -> None:
    run_retrievals(context.server, context.parameters, context.checkpoint, context.progress)


#: Job types by retrieve method; network failures are retried.
RETRIEVE_JOBS = {"C-MOVE": "DicomMoveScu", "C-GET": "DicomGetScu"}
RETRIEVE_JOB_TYPES = [JobType(name, _run_retrieve_job, retry=True)
                      for name in RETRIEVE_JOBS.values()]


# -- request bodies -----------------------------------------------------------------------

def _object(data: bytes) -> dict[str, Any]:
    body = json_body(data) if data.strip() else {}
    if not isinstance(body, dict):
        raise BadRequest("The body must contain a JSON object")
    return body


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object of DICOM tags and values")
    return value


def _level(value: Any) -> Level:
    try:
        return Level.parse(value)
    except (ValueError, AttributeError):
        raise BadRequest(f'"Level" must be Patient, Study, Series or Instance, not '
                         f"{json.dumps(value)}") from None


def _retrieve_options(data: bytes) -> dict[str, Any]:
    """A JSON object, or a bare target AET (Orthanc's text/plain form)."""
    stripped = data.strip()
    if stripped.startswith(b"{"):
        return _object(stripped)
    return {"TargetAet": stripped.decode(errors="replace")} if stripped else {}


def _body_form(body: dict[str, Any]) -> Mode:
    return "short" if body.get("Short") else "full" if body.get("Full") else "simplify"


def routes() -> list[PluginRoute]:
    answer_path = "/queries/{id}/answers/{index}"
    return [
        *permitted(  # asking a modality is an action on the network: write
            "write",
            Route("/modalities/{id}/query", query, methods=["POST"]),
            Route("/modalities/{id}/move", retrieve_resources("C-MOVE"), methods=["POST"]),
            Route("/modalities/{id}/get", retrieve_resources("C-GET"), methods=["POST"]),
            Route("/modalities/{id}/find-worklist", find_worklist, methods=["POST"]),
            Route("/modalities/{id}/find", find_hierarchy, methods=["POST"]),
            *(Route(f"/modalities/{{id}}/find-{level.name.lower()}", find_level,
                    methods=["POST"]) for level in Level),
            Route("/queries/{id}", delete_query, methods=["DELETE"]),
            Route("/queries/{id}/retrieve", retrieve_answers, methods=["POST"]),
            Route(f"{answer_path}/retrieve", retrieve_answers, methods=["POST"]),
            *(Route(f"{answer_path}/query-{level.plural}", child_query(level),
                    methods=["POST"]) for level in (Level.STUDY, Level.SERIES, Level.INSTANCE))),
        *permitted(
            "read",
            Route("/queries", list_queries, methods=["GET"]),
            Route("/queries/{id}", query_operations, methods=["GET"]),
            Route("/queries/{id}/answers", list_answers, methods=["GET"]),
            Route("/queries/{id}/level", query_level, methods=["GET"]),
            Route("/queries/{id}/modality", query_modality, methods=["GET"]),
            Route("/queries/{id}/query", query_arguments, methods=["GET"]),
            Route(answer_path, answer_operations, methods=["GET"]),
            Route(f"{answer_path}/content", answer_content, methods=["GET"])),
    ]
