"""``lanthorn import``: bulk-load folders, files and ZIP archives through the ingest path.

Every instance goes through ``server.ingest`` like one uploaded over REST, so plugins'
filters and hooks apply. Files and ZIP members are read one at a time so memory stays
flat whatever the size of the import. The importer holds a lease in the index while it
runs so that ``lanthorn check --repair`` spares the files it is writing.
"""

from __future__ import annotations

import os
import sys
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BadFileFormat
from .ingest import is_zip
from .lease import Lease
from .types import Origin

if TYPE_CHECKING:
    from .ingest import BatchItem
    from .server import Server

#: Orthanc's origin for instances that neither REST, DICOM nor Lua brought in.
ORIGIN = Origin("Plugins")
LEASE_SECONDS = 60.0
PROGRESS_SECONDS = 0.1
#: What reading a file or an archive member can raise (corrupt, encrypted, unsupported).
UNREADABLE = (OSError, zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError,
              EOFError)


@dataclass(frozen=True)
class Failure:
    """A file (or ``archive.zip:member``) that was not stored, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class ImportReport:
    """Counts and problems of one import; non-DICOM files are skipped, not failures."""

    files: int = 0
    archives: int = 0
    stored: int = 0
    already_stored: int = 0
    skipped: list[Failure] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    bytes: int = 0
    elapsed: float = 0.0

    def add(self, name: str, item: BatchItem) -> None:
        if item.stored is not None:
            if item.stored.status == "Success":
                self.stored += 1
            else:
                self.already_stored += 1
        elif isinstance(item.error, BadFileFormat):
            self.skipped.append(Failure(name, str(item.error)))
        else:
            self.failures.append(Failure(name, str(item.error)))

    def rates(self) -> str:
        elapsed = max(self.elapsed, 1e-9)
        return f"{self.files / elapsed:.1f} files/s, {self.bytes / 1e6 / elapsed:.1f} MB/s"

    def progress_line(self) -> str:
        return (f"{self.files} files, {self.stored} stored, {self.already_stored} already "
                f"stored, {len(self.skipped) + len(self.failures)} not stored ({self.rates()})")

    def summary(self) -> str:
        return "\n".join([
            f"Files seen:       {self.files} (ZIP members included)",
            f"ZIP archives:     {self.archives}",
            f"Instances stored: {self.stored}",
            f"Already stored:   {self.already_stored}",
            f"Skipped:          {len(self.skipped)}",
            *(f"  {s}" for s in self.skipped),
            f"Failures:         {len(self.failures)}",
            *(f"  {f}" for f in self.failures),
            f"Read {self.bytes / 1e6:.1f} MB in {self.elapsed:.1f} s ({self.rates()})",
        ])


def import_paths(server: Server, paths: list[str], progress: bool) -> ImportReport:
    """Import every file under ``paths``; ``progress`` draws a counter on stderr."""
    return _Importer(server, progress).run(paths)


class _Importer:
    def __init__(self, server: Server, progress: bool) -> None:
        self.server = server
        self.progress = progress
        self.report = ImportReport()
        # Taken before the first write (``lanthorn check --repair`` spares its files).
        self.lease = Lease(server.index, f"import:{server.identity}", server.identity,
                           LEASE_SECONDS)
        self._started = time.monotonic()
        self._drawn = float("-inf")

    def run(self, paths: list[str]) -> ImportReport:
        try:
            for path in _walk(paths, self.report):
                if _starts_like_a_zip(path):
                    self._archive(path)
                else:
                    self._one(str(path), path.read_bytes)
        finally:
            self.lease.release()
            self._tick(final=True)
            if self.progress:
                sys.stderr.write("\n")
        return self.report

    def _archive(self, path: Path) -> None:
        try:
            with zipfile.ZipFile(path) as archive:
                self.report.archives += 1
                for member in archive.infolist():
                    if not member.is_dir():
                        self._one(f"{path}:{member.filename}", partial(archive.read, member))
        except UNREADABLE as exc:
            self.report.failures.append(Failure(str(path), f"Cannot read this archive: {exc}"))

    def _one(self, name: str, read: Callable[[], bytes]) -> None:
        self.lease.held()
        self.report.files += 1
        try:
            data = read()
        except UNREADABLE as exc:
            self.report.failures.append(Failure(name, f"Cannot read: {exc}"))
            return
        self.report.bytes += len(data)
        for item in self.server.ingest.store_many(data, ORIGIN):
            self.report.add(":".join(filter(None, (name, item.name))), item)
        self._tick()

    def _tick(self, final: bool = False) -> None:
        now = time.monotonic()
        self.report.elapsed = now - self._started
        if self.progress and (final or now - self._drawn >= PROGRESS_SECONDS):
            sys.stderr.write(f"\r{self.report.progress_line()}\x1b[K")
            sys.stderr.flush()
            self._drawn = now


def _starts_like_a_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            return is_zip(file.read(132))
    except OSError:
        return False  # reported when the file is read


def _walk(paths: list[str], report: ImportReport) -> Iterator[Path]:
    """Regular files under ``paths`` in a stable order (never a FIFO, which would block);
    a path that is not there is a failure."""
    for given in map(Path, paths):
        if given.is_file():
            yield given
        elif given.is_dir():
            for folder, subfolders, files in os.walk(given):
                subfolders.sort()
                yield from (p for p in (Path(folder, n) for n in sorted(files)) if p.is_file())
        else:
            report.failures.append(Failure(str(given), "No such file or folder"))
