"""Lanthorn on PostgreSQL: the index and (optionally) the storage area in one database
that several Lanthorn processes, on several machines, share.

Installed but not enabled (no ``"PostgreSQL": {"EnableIndex": true}`` nor
``"EnableStorage": true``), the plugin changes nothing.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from lanthorn import Command, IndexBackendFactory, StorageAreaFactory, hookimpl
from lanthorn.index import SqlIndex, upgrade

from .engine import MIGRATIONS, index_engine, postgres_engine
from .notify import ChangeListener
from .settings import SECTION, Settings

if TYPE_CHECKING:
    from lanthorn import Server
    from lanthorn.model import MainTags

    from .storage import PostgresStorage

__version__ = "0.1.0"

#: The configuration sections this plugin reads (the core warns about unknown ones).
config_sections = (SECTION,)

BACKEND = "postgresql"

#: The LISTEN thread of each started server on this backend, by server identity.
_listeners: dict[str, ChangeListener] = {}


def settings_of(server: Server) -> Settings:
    return Settings.from_section(server.config.section(SECTION))


def open_index(settings: Settings, main_tags: MainTags | None = None) -> SqlIndex:
    """The shared SQL index on PostgreSQL, migrated to the newest schema (the core's and
    the plugin's tables)."""
    engine = index_engine(settings)
    upgrade(engine, [MIGRATIONS])
    return SqlIndex(engine, main_tags)


def open_storage(settings: Settings) -> PostgresStorage:
    """The storage area in the database of ``settings`` (its tables migrated)."""
    from .storage import PostgresStorage

    return PostgresStorage(postgres_engine(settings))


def _create_index(server: Server) -> SqlIndex:
    return open_index(settings_of(server), server.main_tags)


def _create_storage(server: Server) -> PostgresStorage:
    return open_storage(settings_of(server))


@hookimpl
def register_index_backends(server: Server) -> list[IndexBackendFactory]:
    return [IndexBackendFactory(BACKEND, _create_index,
                                requested=lambda s: settings_of(s).enable_index)]


@hookimpl
def register_storage_areas(server: Server) -> list[StorageAreaFactory]:
    return [StorageAreaFactory(BACKEND, _create_storage,
                               requested=lambda s: settings_of(s).enable_storage)]


@hookimpl
def register_commands(parser: argparse.ArgumentParser) -> list[Command]:
    from .importer import configure, run

    return [Command("postgres", "PostgreSQL tools: import-sqlite", run, configure)]


@hookimpl
def startup(server: Server) -> None:
    """Wake this server's event loop when another node logs a change."""
    if settings_of(server).enable_index:
        listener = ChangeListener(server.index.engine.url,
                                  lambda: server.events.wake() if server.events else None)
        _listeners[server.identity] = listener
        listener.start()


@hookimpl
def shutdown(server: Server) -> None:
    listener = _listeners.pop(server.identity, None)
    if listener is not None:
        listener.stop()
