"""The default storage area: files under ``StorageDirectory``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..plugins import hookimpl
from ..storage import FilesystemStorage
from ..types import StorageAreaFactory

if TYPE_CHECKING:
    from ..server import Server


def _create(server: Server) -> FilesystemStorage:
    return FilesystemStorage(server.config["StorageDirectory"],
                             sync=bool(server.config["SyncStorageArea"]))


@hookimpl(trylast=True)
def register_storage_areas(server: Server) -> list[StorageAreaFactory]:
    return [StorageAreaFactory("filesystem", _create)]
