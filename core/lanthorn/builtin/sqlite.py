"""The default index backend: SQLite in WAL mode, in ``IndexDirectory``."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event

from ..index import SqlIndex, upgrade
from ..plugins import hookimpl
from ..types import IndexBackendFactory

if TYPE_CHECKING:
    from ..server import Server

INDEX_FILE = "index.sqlite"
LOCK_FILE = "index.lock"


def sqlite_engine(path: Path, *, durable: bool) -> Engine:
    """An engine whose connections are in WAL mode and take write locks up front.

    ``synchronous=FULL`` makes each commit durable across power loss (what
    ``SyncStorageArea`` promises); NORMAL still survives a process crash. The pool hands
    out the connection used last: a connection idle since another one wrote has a stale
    page cache, which SQLite reads again page by page.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{path}", pool_size=8, max_overflow=56, pool_use_lifo=True,
                           connect_args={"check_same_thread": False, "timeout": 60})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:  # noqa: ANN001
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        for pragma in ("journal_mode=WAL", f"synchronous={'FULL' if durable else 'NORMAL'}",
                       "foreign_keys=ON", "case_sensitive_like=ON", "busy_timeout=60000"):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:  # noqa: ANN001
        write = connection.get_execution_options().get("lanthorn_write")
        # On the driver's connection: exec_driver_sql's bookkeeping costs more than BEGIN.
        connection.connection.driver_connection.execute("BEGIN IMMEDIATE" if write
                                                        else "BEGIN")

    return engine


class WriterLock:
    """One writer at a time across threads and processes, woken in order by the kernel.

    SQLite's own busy handler sleeps in growing steps (up to 100 ms) while another
    process writes; queueing on ``flock`` instead hands the lock over immediately.
    Open it after any fork: an inherited descriptor would be shared, not exclusive.
    """

    def __init__(self, path: Path) -> None:
        self._threads = threading.Lock()
        self._descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._threads:
            fcntl.flock(self._descriptor, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._descriptor, fcntl.LOCK_UN)


def _create(server: Server) -> SqlIndex:
    folder = Path(server.config["IndexDirectory"] or server.config["StorageDirectory"])
    engine = sqlite_engine(folder / INDEX_FILE, durable=bool(server.config["SyncStorageArea"]))
    upgrade(engine)
    return SqlIndex(engine, server.main_tags, write_lock=WriterLock(folder / LOCK_FILE))


@hookimpl(trylast=True)
def register_index_backends(server: Server) -> list[IndexBackendFactory]:
    return [IndexBackendFactory("sqlite", _create)]
