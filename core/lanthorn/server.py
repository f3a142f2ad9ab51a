"""The Server: owns the configuration, plugins, storage area, index and event loop.

A Server is built from a Config, opens its backends, and hands out the Starlette app
and the DICOM listener; ``lanthorn serve`` runs those, tests build their own Servers
(without entry points, so installed plugins never leak into core tests).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from . import redact
from .audit import AuditLog
from .auth import Users
from .config import Config, ConfigError
from .errors import PluginError
from .ingest import Ingester
from .jobs import JobEngine
from .metrics import Metrics
from .model import MainTags
from .peers import check_configuration as check_peers
from .plugins import PluginHost, make_plugin_host
from .types import IndexBackendFactory, StorageAreaFactory
from .userdata import check_configuration as check_user_types

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.applications import Starlette

    from .changes import EventDispatcher
    from .index.records import DeleteOutcome, Resource
    from .index.sql import SqlIndex
    from .storage import StorageArea

log = logging.getLogger(__name__)

_Factory = TypeVar("_Factory", StorageAreaFactory, IndexBackendFactory)

#: Sections of Lanthorn's own plugins, so that enabling one that is not installed is
#: an error that says what to install (never a silent fallback to the defaults).
OFFICIAL_PLUGIN_SECTIONS = {
    "PostgreSQL": "lanthorn-postgres",
    "DicomWeb": "lanthorn-dicomweb",
    "Worklists": "lanthorn-worklists",
    "WholeSlideImaging": "lanthorn-wsi",
    "Viewer": "lanthorn-viewer",
    "Lua": "lanthorn-lua",
}


class Server:
    """One Lanthorn server process (several can share an index: see ``Workers``)."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        load_entry_points: bool = True,
        plugins: list[object] | tuple[object, ...] = (),
    ) -> None:
        self.config = config or Config.defaults()
        redact.configure(bool(self.config["DeidentifyLogs"]))
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.started = time.time()
        base_dir = self.config.sources[0].parent if self.config.sources else Path.cwd()
        self.plugins: PluginHost = make_plugin_host(
            extra=self.config["Plugins"], disabled=self.config["DisabledPlugins"],
            load_entry_points=load_entry_points, base_dir=base_dir, objects=plugins,
        )
        self._check_sections()
        check_peers(self.config)
        check_user_types(self.config)
        self.users = Users.from_config(self.config)
        self.main_tags = MainTags(self.config["ExtraMainDicomTags"])
        self.storage: StorageArea = self._open_storage()
        self.index: SqlIndex = self._open_index()
        self.ingest = Ingester(self)
        self.jobs = JobEngine(self)
        self.metrics = Metrics(bool(self.config["MetricsEnabled"]))
        self.audit = AuditLog(self)
        self.events: EventDispatcher | None = None
        #: Set by ``lanthorn serve``: stops this server (with ``Workers``, all of them),
        #: then starts it again if asked (``/tools/reset``, ``/tools/shutdown``).
        self.request_stop: Callable[[bool], None] | None = None
        self._app: Starlette | None = None

    # -- configuration checks ------------------------------------------------------------

    def _check_sections(self) -> None:
        loaded = self.plugins.loaded_sections()
        for section, package in OFFICIAL_PLUGIN_SECTIONS.items():
            if section in self.config.user_keys() and section not in loaded \
                    and _enables_something(self.config.section(section)):
                raise ConfigError(
                    f'the configuration enables "{section}" but the plugin {package} is not '
                    f"installed (pip install {package}), or it failed to load: see "
                    "`lanthorn plugins`")
        for warning in self.config.unknown_key_warnings(loaded | set(OFFICIAL_PLUGIN_SECTIONS)):
            log.warning(warning)

    def _open_storage(self) -> StorageArea:
        return _requested_or_named(self, self.plugins.hook.register_storage_areas(server=self),
                                   "StorageArea", "storage areas").create(self)

    def _open_index(self) -> SqlIndex:
        return _requested_or_named(self, self.plugins.hook.register_index_backends(server=self),
                                   "IndexBackend", "index backends").create(self)

    # -- operations shared by several entry points --------------------------------------

    def delete(self, resource: Resource) -> DeleteOutcome:
        """Delete a resource: the index first (then no row lacks its file), files after."""
        outcome = self.index.delete_resource(resource)
        for attachment in outcome.removed_uuids:
            self.storage.remove(attachment)
        return outcome

    # -- running -------------------------------------------------------------------------

    @property
    def app(self) -> Starlette:
        """The REST application (built once, on first use)."""
        if self._app is None:
            from .rest.app import build_app

            self._app = build_app(self)
        return self._app

    def start(self, *, background: bool = True) -> None:
        """Run plugins' start-up; with ``background``, the event loop and other duties."""
        self.plugins.hook.startup(server=self)
        if background:
            from .changes import EventDispatcher

            # Before our own loops take their leases: another server's would be alive.
            fresh = not self.index.live_lease_holders()
            for kind, option in (("peer", "OrthancPeersInDatabase"),
                                 ("modality", "DicomModalitiesInDatabase")):
                if fresh and not self.config[option]:
                    self.index.clear_remote_nodes(kind)  # REST changes last until then
            self.events = EventDispatcher(self)
            self.events.start()
            self.jobs.start(fresh=fresh)

    def stop(self) -> None:
        if self.events is not None:
            self.events.stop()
            self.events = None
            self.jobs.stop()
        self.plugins.hook.shutdown(server=self)

    def close(self) -> None:
        """Close the index (after the last audit entries), and the storage area if it has
        connections to close."""
        self.audit.close()
        self.index.close()
        close_storage = getattr(self.storage, "close", None)
        if close_storage is not None:
            close_storage()


def _by_name(batches: list[list[_Factory]]) -> dict[str, _Factory]:
    """Factories by name; on a clash the first answer (a plugin over a ``trylast``
    built-in) wins, so a plugin can replace a default backend."""
    return {f.name: f for batch in reversed(batches) for f in batch}


def _requested_or_named(server: Server, batches: list[list[_Factory]], option: str,
                        kind: str) -> _Factory:
    """The factory a plugin section enables (``"EnableIndex": true``), else the one the
    option names; two enabled at once are a ConfigError."""
    factories = _by_name(batches)
    requested = [f for f in factories.values() if f.requested(server)]
    if len(requested) > 1:
        raise ConfigError(f"several {kind} are enabled: " + ", ".join(f.name for f in requested))
    return requested[0] if requested else _choose(factories, server.config[option], option)


def _choose(factories: dict, name: str, option: str):  # noqa: ANN001, ANN202
    try:
        return factories[name]
    except KeyError:
        raise PluginError(f'{option} "{name}" is not available; choose one of: '
                          + ", ".join(sorted(factories))) from None


def _enables_something(section: dict) -> bool:
    """A plugin section switches something on when any Enable* flag is true."""
    flags = [v for k, v in section.items() if k.startswith("Enable")]
    return any(flags) if flags else bool(section)
