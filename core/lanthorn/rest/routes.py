"""The core REST API, registered as a built-in plugin like any other."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..plugins import hookimpl
from . import (
    archives,
    audit,
    commitment,
    create,
    find,
    images,
    instances,
    jobs,
    labels,
    metrics,
    modalities,
    modify,
    peers,
    queries,
    resources,
    system,
    tokens,
    tools,
    userdata,
)

if TYPE_CHECKING:
    from ..jobs import JobType
    from ..server import Server
    from ..types import PluginRoute


@hookimpl
def register_routes(server: Server) -> list[PluginRoute]:
    return [*system.routes(), *instances.routes(), *find.routes(), *resources.routes(),
            *archives.routes(), *images.routes(), *create.routes(),
            *labels.routes(),
            *modalities.routes(),
            *peers.routes(),
            *metrics.routes(),
            *userdata.routes(),
            *jobs.routes(),
            *queries.routes(),
            *commitment.routes(),
            *modify.routes(),
            *tools.routes(),
            *audit.routes(),
            *tokens.routes()]


@hookimpl
def register_job_types(server: Server) -> list[JobType]:
    return [archives.ARCHIVE_JOB_TYPE, archives.MEDIA_JOB_TYPE, modalities.STORE_JOB_TYPE,
            *queries.RETRIEVE_JOB_TYPES, modify.JOB_TYPE, modify.SPLIT_JOB_TYPE,
            modify.MERGE_JOB_TYPE, peers.STORE_JOB_TYPE]
