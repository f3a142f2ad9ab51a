"""A storage area in PostgreSQL: attachments as rows of ``bytea`` chunks.

Nodes that share the database share their files, with no shared filesystem. A file is
written in one transaction (atomic and durable at commit, so there are no temporary
files to clean) and read one chunk per query, so a large file is never held in memory.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import BinaryIO

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    exists,
    insert,
    select,
)
from sqlalchemy.exc import OperationalError

from lanthorn.errors import InexistentItem, StorageFull
from lanthorn.index import upgrade

from .engine import MIGRATIONS

#: Bytes per row: large enough for few round trips, small enough to stream.
CHUNK = 1 << 20
DISK_FULL = "53100"

#: The storage tables belong to this plugin, not to the shared index schema: they are
#: created by the migrations of this Alembic branch.
BRANCH = "postgres_storage"
metadata = MetaData()
files = Table(
    "storage_files", metadata,
    Column("uuid", String(36), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("written", Float, nullable=False),
)
chunks = Table(
    "storage_chunks", metadata,
    Column("uuid", String(36), ForeignKey("storage_files.uuid", ondelete="CASCADE"),
           primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)


class PostgresStorage:
    """The ``StorageArea`` protocol over two tables (see ``lanthorn.storage``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Its own branch alone: the index may be elsewhere (SQLite) or migrated already.
        upgrade(engine, [MIGRATIONS], f"{BRANCH}@head")

    def close(self) -> None:
        self.engine.dispose()

    def write(self, uuid: str, data: bytes) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(files), {"uuid": uuid, "size": len(data),
                                             "written": time.time()})
                rows = [{"uuid": uuid, "number": n, "data": data[start:start + CHUNK]}
                        for n, start in enumerate(range(0, len(data), CHUNK))]
                if rows:  # an empty file has no chunk
                    conn.execute(insert(chunks), rows)
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) == DISK_FULL:
                raise StorageFull(f"the PostgreSQL storage area is full: {exc.orig}") from exc
            raise

    def open(self, uuid: str) -> BinaryIO:
        with self.engine.connect() as conn:
            size = conn.scalar(select(files.c.size).where(files.c.uuid == uuid))
        if size is None:
            raise InexistentItem(f"attachment {uuid} is missing from the storage area")
        return io.BufferedReader(_ChunkReader(self.engine, uuid, size), CHUNK)  # type: ignore[return-value]

    def remove(self, uuid: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(files).where(files.c.uuid == uuid))

    def exists(self, uuid: str) -> bool:
        with self.engine.connect() as conn:
            return bool(conn.scalar(select(exists().where(files.c.uuid == uuid))))

    def scan(self) -> Iterator[tuple[str, float]]:
        with self.engine.connect() as conn:
            yield from conn.execute(select(files.c.uuid, files.c.written)
                                    .order_by(files.c.uuid))


class _ChunkReader(io.RawIOBase):
    """A seekable raw file over the chunks of one attachment, one query per read."""

    def __init__(self, engine: Engine, uuid: str, size: int) -> None:
        self._engine, self._uuid, self._size, self._position = engine, uuid, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(base + offset, 0)
        return self._position

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._position >= self._size:
            return 0
        number, skip = divmod(self._position, CHUNK)
        with self._engine.connect() as conn:
            data = conn.scalar(select(chunks.c.data).where(chunks.c.uuid == self._uuid,
                                                          chunks.c.number == number))
        if data is None:
            raise InexistentItem(f"attachment {self._uuid} was removed while being read")
        piece = memoryview(data)[skip:skip + len(buffer)]
        buffer[:len(piece)] = piece
        self._position += len(piece)
        return len(piece)
