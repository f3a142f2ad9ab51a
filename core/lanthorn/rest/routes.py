"""The core REST API, registered as a built-in plugin like any other."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..plugins import hookimpl
from . import archives, find, instances, labels, modalities, modify, resources, system, tools

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from ..server import Server


@hookimpl
def register_routes(server: Server) -> list[BaseRoute]:
    return [*system.routes(), *instances.routes(), *find.routes(), *resources.routes(),
            *archives.routes(),
            *labels.routes(),
            *modalities.routes(),
            *modify.routes(),
            *tools.routes()]
