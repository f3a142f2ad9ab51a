"""The storage area: where the bytes of attachments (DICOM files first) live.

A storage area is addressed by attachment UUID and knows nothing of DICOM. The index
records which UUIDs exist; storage is written *before* the index commits and removed
*after* it, so a crash can leave an orphan file (``lanthorn check --repair`` removes
it) but never an index row without its file.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import uuid as uuidlib
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from .errors import InexistentItem, StorageFull
from .pools import SharedPool


@runtime_checkable
class StorageArea(Protocol):
    """What the core needs from a place that keeps attachment bytes.

    An area that holds connections may also define ``close()``: ``Server.close`` calls it.
    """

    def write(self, uuid: str, data: bytes | Iterable[bytes]) -> None:
        """Store ``data`` under ``uuid`` durably (per the area's sync policy) before
        returning; it is read only once an index row refers to ``uuid``.

        ``data`` is the bytes, or chunks for files too big for memory (job outputs)."""

    def open(self, uuid: str) -> BinaryIO:
        """A seekable binary file object at the start (range reads seek); InexistentItem
        when the attachment is missing."""

    def remove(self, uuid: str) -> None:
        """Forget ``uuid``; a missing file is not an error (deletes are retried)."""

    def exists(self, uuid: str) -> bool: ...

    def scan(self) -> Iterator[tuple[str, float]]:
        """Every stored UUID with its modification time (for consistency checks; a
        write cut short by a crash is found there, as a UUID no row refers to)."""


def new_uuid() -> str:
    return str(uuidlib.uuid4())


#: Filesystems whose fsync of a new file also makes its name durable, and the folders
#: created on its way: their journal (or log) commits in order, so the commit the fsync
#: waits for holds the file's creation too. Elsewhere the folders are fsynced as well,
#: as POSIX asks; on these that is a device flush each and nothing more.
NAMES_DURABLE_WITH_FILE = frozenset({"ext4", "xfs", "btrfs"})


class FilesystemStorage:
    """Files in a two-level fan-out (``ab/cd/abcd....``).

    With ``sync`` the file is fsynced before ``write`` returns, and so are the folders
    it lands in unless the filesystem makes them durable with the file
    (NAMES_DURABLE_WITH_FILE): an acknowledged instance survives a power loss.
    """

    def __init__(self, root: str | os.PathLike[str], *, sync: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.sync = sync
        self.sync_folders = sync and filesystem_type(self.root) not in NAMES_DURABLE_WITH_FILE

    def path(self, uuid: str) -> Path:
        return self.root / uuid[0:2] / uuid[2:4] / uuid

    def write(self, uuid: str, data: bytes | Iterable[bytes]) -> None:
        """Write in place, not under a temporary name renamed after: no index row refers
        to ``uuid`` yet, so a write cut short by a crash is nobody's file (an orphan to
        ``lanthorn check``), and on a journaling filesystem the file's fsync also records
        its folder entry, where a rename after it needs a flush of its own (C-STORE of
        small files: 6-9% faster on ext4)."""
        target = self.path(uuid)
        try:
            handle, created = self._create(target)
            with handle:
                try:
                    for chunk in (data,) if isinstance(data, bytes) else data:
                        handle.write(chunk)
                    handle.flush()
                    if self.sync:
                        os.fsync(handle.fileno())
                except BaseException:  # a failing chunk producer leaves no file either
                    target.unlink(missing_ok=True)
                    raise
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"the storage area is full: {exc}") from exc
            raise
        if self.sync_folders:
            for folder in (target.parent, *created):
                _fsync_folder(folder)

    @staticmethod
    def _create(target: Path) -> tuple[BinaryIO, list[Path]]:
        """The new file, open for writing, and the folders whose entries changed to make
        room for it. The fan-out folders are made when opening finds them missing: a
        look before every write cost a ``stat``."""
        try:
            return open(target, "xb"), []
        except FileNotFoundError:
            folder = target.parent
            changed = [p.parent for p in (folder.parent, folder) if not p.is_dir()]
            folder.mkdir(parents=True, exist_ok=True)
            return open(target, "xb"), changed

    def open(self, uuid: str) -> BinaryIO:
        try:
            return open(self.path(uuid), "rb")
        except FileNotFoundError:
            raise InexistentItem(f"attachment {uuid} is missing from the storage area") from None

    def remove(self, uuid: str) -> None:
        self.path(uuid).unlink(missing_ok=True)

    def exists(self, uuid: str) -> bool:
        return self.path(uuid).is_file()

    def scan(self) -> Iterator[tuple[str, float]]:
        # Only files where path() finds them: anything else could not be removed by UUID.
        for first in sorted(self.root.glob("[0-9a-f][0-9a-f]")):
            for entry in first.glob("[0-9a-f][0-9a-f]/*"):
                if entry.name.startswith(first.name + entry.parent.name):
                    yield from _with_mtime(entry)


def _with_mtime(entry: Path) -> Iterator[tuple[str, float]]:
    """``(name, mtime)`` of a regular file; nothing if it vanished (a live server deletes
    files while a check scans)."""
    try:
        status = entry.stat()
    except FileNotFoundError:
        return
    if stat.S_ISREG(status.st_mode):
        yield entry.name, status.st_mtime


#: How /proc/self/mounts writes a space, tab, newline or backslash in a mount point.
_MOUNT_ESCAPE = re.compile(r"\\([0-7]{3})")


def filesystem_type(path: Path, mounts: str | None = None) -> str:
    """The type of the filesystem that holds ``path``, from ``mounts`` (the text of
    /proc/self/mounts, read when not given); "" when unknown (not Linux)."""
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
    resolved = path.resolve()
    found, found_depth = "", -1
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(_MOUNT_ESCAPE.sub(lambda m: chr(int(m[1], 8)), fields[1]))
        depth = len(point.parts)  # the deepest mount holds it; of two on one point, the last
        if depth >= found_depth and resolved.is_relative_to(point):
            found, found_depth = fields[2], depth
    return found


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


#: Attachment compression codes, as Orthanc numbers them.
COMPRESSION_NONE = 1
COMPRESSION_ZLIB = 2


def compress(data: bytes) -> bytes:
    """Orthanc's zlib layout: the uncompressed size (8 bytes, little endian), then zlib."""
    return len(data).to_bytes(8, "little") + zlib.compress(data, 6)


def read_chunks(area: StorageArea, uuid: str, compression: int, start: int = 0,
                end: int | None = None, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The bytes ``[start, end)`` of a stored file, inflated if needed, a block at a time.

    Nothing is read before iteration starts, and never the whole file at once.
    """
    with area.open(uuid) as handle:
        if compression == COMPRESSION_ZLIB:
            blocks = _inflated(handle, chunk)
        else:
            handle.seek(start)
            blocks = iter(lambda: handle.read(chunk), b"")
            end, start = (None if end is None else end - start), 0
        yield from _window(blocks, start, end)


def read_all(area: StorageArea, uuid: str, compression: int) -> bytes:
    return b"".join(read_chunks(area, uuid, compression))


class StoredFile(Protocol):
    """What reading a file needs from its attachment record."""

    uuid: str
    compression: int
    uncompressed_size: int


#: How far ``read_ahead_files`` reads beyond the file being consumed, in files and bytes;
#: bigger files are streamed block by block when their turn comes instead.
AHEAD_FILES = 16
AHEAD_BYTES = 16 << 20
#: Reads in flight at once, over every answer of the process.
READER_THREADS = 8
_readers = SharedPool(READER_THREADS, "storage-read")


def read_ahead_files(area: StorageArea, files: Sequence[StoredFile]) -> list[Iterator[bytes]]:
    """Lazy byte streams of ``files``, for a consumer that takes them in order (an archive,
    a multipart answer); when one starts, the next ones are being read on a shared pool.

    A disk serves several reads at once much faster than one after another: a study read
    cold file by file is bound by each read's latency, not by the disk's throughput.
    """
    pending: dict[int, Future[bytes]] = {}

    def prefetch(first: int) -> None:
        budget = AHEAD_BYTES
        for number in range(first, min(first + AHEAD_FILES, len(files))):
            file = files[number]
            budget -= file.uncompressed_size
            if budget < 0:
                return
            if number not in pending:
                pending[number] = _readers.submit(read_all, area, file.uuid,
                                                  file.compression)

    def stream(number: int) -> Iterator[bytes]:
        prefetch(number)
        read = pending.pop(number, None)
        if read is None:  # too big to hold in memory: block by block
            yield from read_chunks(area, files[number].uuid, files[number].compression)
        else:
            yield read.result()

    return [stream(number) for number in range(len(files))]


def _inflated(handle: BinaryIO, chunk: int) -> Iterator[bytes]:
    handle.read(8)  # the uncompressed size comes first (Orthanc's layout)
    inflate = zlib.decompressobj()
    while block := handle.read(chunk):
        yield inflate.decompress(block)
    yield inflate.flush()


def _window(blocks: Iterator[bytes], start: int, end: int | None) -> Iterator[bytes]:
    """Cut a stream of blocks down to the offsets ``[start, end)``."""
    position = 0
    for block in blocks:
        low, high = max(start - position, 0), len(block) if end is None else end - position
        position += len(block)
        if high > low:
            yield block[low:high]
        if end is not None and position >= end:
            return

