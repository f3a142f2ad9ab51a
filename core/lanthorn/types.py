"""The small vocabulary of records that plugins exchange with the core."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from .index.sql import SqlIndex
    from .model import Level
    from .server import Server
    from .storage import StorageArea


@dataclass(frozen=True)
class Origin:
    """Where an instance came from; becomes Orthanc's per-instance metadata."""

    kind: str = "Plugins"  # Orthanc's names: "RestApi", "DicomProtocol", "Plugins", "Lua"
    remote_ip: str = ""
    remote_aet: str = ""
    called_aet: str = ""
    username: str = ""


@dataclass(frozen=True)
class DimseRequest:
    """A C-FIND, C-MOVE or C-GET received over DICOM, as the ``handle_c_*`` hooks see it."""

    sop_class: str  # the information model: the abstract syntax UID of the request
    identifier: Dataset  # the request's identifier, as the peer sent it
    origin: Origin  # the peer's AET and address, and the AET it called
    level: Level | None = None  # the QueryRetrieveLevel; None for a worklist query
    limit: int = 0  # C-FIND: the listener sends at most this many answers (0: no limit)
    move_destination: str = ""  # C-MOVE: the AET the instances go to
    #: True once the peer has sent a C-CANCEL for this request.
    is_cancelled: Callable[[], bool] = lambda: False
    #: The presentation context's transfer syntax, in which the answers are sent.
    transfer_syntax: str = "1.2.840.10008.1.2.1"


@dataclass(frozen=True)
class StoredInstance:
    """The answer of the ingest path for one instance (Orthanc's POST /instances item)."""

    public_ids: tuple[str, str, str, str]
    status: str  # "Success" or "AlreadyStored"
    uids: tuple[str, str, str, str] = ("", "", "", "")
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.public_ids[3]

    def as_json(self) -> dict[str, str]:
        patient, study, series, instance = self.public_ids
        return {
            "ID": instance,
            "ParentPatient": patient,
            "ParentSeries": series,
            "ParentStudy": study,
            "Path": f"/instances/{instance}",
            "Status": self.status,
        }


@dataclass(frozen=True)
class StorageAreaFactory:
    """A named storage area; ``StorageArea`` (or the area's own config section) picks one."""

    name: str
    create: Callable[[Server], StorageArea]
    #: True when the area's own config section asks for it (e.g. PostgreSQL.EnableStorage).
    requested: Callable[[Server], bool] = lambda server: False


@dataclass(frozen=True)
class IndexBackendFactory:
    """A named index backend; ``IndexBackend`` (or a plugin's section) picks one."""

    name: str
    create: Callable[[Server], SqlIndex]
    #: True when the backend's own config section asks for it (e.g. PostgreSQL.EnableIndex).
    requested: Callable[[Server], bool] = lambda server: False


@dataclass(frozen=True)
class PluginRoute:
    """A route with the metadata the core enforces."""

    route: BaseRoute
    #: "read", "store", "write", "admin" or "account" (docs/security.md). Every route
    #: declares one (a missing one stops start-up), except a public route.
    permission: str | None = None
    public: bool = False  # reachable without authentication
    overrides_core: bool = False  # deliberately replaces a core route with the same path


def permitted(permission: str, *routes: BaseRoute) -> list[PluginRoute]:
    """Routes that all need ``permission``."""
    return [PluginRoute(route, permission) for route in routes]


@dataclass(frozen=True)
class Principal:
    """Who is calling, as the ``authenticate`` hook established it."""

    name: str
    roles: frozenset[str]
    #: How: "basic", "token", "certificate", a plugin's own word, or "anonymous"
    #: (authentication disabled).
    method: str


@dataclass(frozen=True)
class Command:
    """A ``lanthorn <name>`` subcommand contributed by a plugin."""

    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    configure: Callable[[argparse.ArgumentParser], None] = lambda parser: None
