"""The small vocabulary of records that plugins exchange with the core."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from .index.sql import SqlIndex
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
    """A named storage area; ``StorageArea`` in the config picks one by name."""

    name: str
    create: Callable[[Server], StorageArea]


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
    permission: str = "read"  # "read", "write" or "admin"
    public: bool = False  # reachable without authentication
    overrides_core: bool = False  # deliberately replaces a core route with the same path


@dataclass(frozen=True)
class Command:
    """A ``lanthorn <name>`` subcommand contributed by a plugin."""

    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    configure: Callable[[argparse.ArgumentParser], None] = lambda parser: None
