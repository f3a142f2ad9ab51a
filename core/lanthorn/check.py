"""``lanthorn check``: verify that the index and the storage area agree, and repair.

Ingest writes a file before the index commits and deletion forgets the row before the
file, so a crash leaves at worst an orphan file. Anything else (a file lost or edited
by hand, a restore that mixed two backups, a failing disk) is found here: every file is
read, so the MD5 recorded at ingest also catches silent corruption.

A running server (or ``lanthorn import``) holds a lease in the index. While one does,
its files in flight look like orphans for a moment, so only those older than
``GRACE_SECONDS`` are reported and removed.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import InexistentItem

if TYPE_CHECKING:
    from .index.records import Attachment, Resource
    from .index.sql import SqlIndex
    from .server import Server
    from .storage import StorageArea

#: How old an unreferenced file must be before it is judged while a server is alive.
GRACE_SECONDS = 600.0

MISSING = "missing files"
BAD_CHECKSUM = "bad checksums"
UNREADABLE = "unreadable files"
ORPHAN = "orphan files"
KINDS = (MISSING, BAD_CHECKSUM, UNREADABLE, ORPHAN)
#: Repair deletes what cannot be recovered; an unreadable file may be (permissions).
LOST = (MISSING, BAD_CHECKSUM)


@dataclass(frozen=True)
class Finding:
    """One inconsistency: its kind, the file it concerns, and what is wrong."""

    kind: str
    name: str
    detail: str

    def __str__(self) -> str:
        return f"{self.name}: {self.detail}"


@dataclass
class CheckReport:
    """What ``check`` found and, with ``repair``, what it did about it."""

    repair: bool
    live_holders: list[str]
    attachments: int = 0
    bytes_checked: int = 0
    findings: list[Finding] = field(default_factory=list)
    spared: int = 0
    actions: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def consistent(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        lines = [f"Checked {self.attachments} attachments "
                 f"({self.bytes_checked / 1e6:.1f} MB) in {self.elapsed:.1f} s"]
        if self.live_holders:
            lines.append(f"A server or import is running ({', '.join(self.live_holders)}): files "
                         f"younger than {GRACE_SECONDS / 60:.0f} minutes are left alone")
        for kind in KINDS:
            found = [f"  {f}" for f in self.findings if f.kind == kind]
            lines += [f"{kind}: {len(found)}", *found]
        if self.spared:
            lines.append(f"Left alone: {self.spared} recent unreferenced files "
                         "(possibly being written)")
        lines += [f"Repaired: {action}" for action in self.actions]
        lines.append("Consistent" if self.consistent else "Inconsistent")
        return "\n".join(lines)


def check(server: Server, repair: bool) -> CheckReport:
    """Compare index and storage; with ``repair``, make them agree again."""
    started = time.time()
    report = CheckReport(repair, server.index.live_lease_holders())
    # Files newer than the check itself may belong to rows committed after we looked.
    cutoff = started - GRACE_SECONDS if report.live_holders else started
    referenced = _check_attachments(server, report) | _job_outputs(server)
    _check_orphans(server.storage, referenced, cutoff, report)
    report.elapsed = time.time() - started
    return report


def _check_attachments(server: Server, report: CheckReport) -> set[str]:
    """Read every recorded file; return the UUIDs the index references."""
    referenced: set[str] = set()
    for owner, attachment in _attachments(server.index):
        referenced.add(attachment.uuid)
        report.attachments += 1
        report.bytes_checked += attachment.compressed_size
        problem = _verify(server.storage, attachment)
        # A concurrent DELETE forgets the row before the file: not a problem then.
        if problem is None or not _still_recorded(server.index, owner, attachment):
            continue
        kind, detail = problem
        report.findings.append(Finding(kind, attachment.uuid,
                                       f"{detail} ({owner.level.title} {owner.public_id})"))
        if report.repair and kind in LOST:
            _forget(server, owner, report)
    return referenced


def _attachments(index: SqlIndex) -> Iterator[tuple[Resource, Attachment]]:
    after = (0, 0)
    while page := index.attachments_page(after):
        yield from page
        owner, attachment = page[-1]
        after = (owner.id, attachment.content_type)


def _verify(storage: StorageArea, attachment: Attachment) -> tuple[str, str] | None:
    try:
        with storage.open(attachment.uuid) as handle:
            digest = hashlib.file_digest(handle, "md5").hexdigest()
    except InexistentItem:
        return MISSING, "not in the storage area"
    except OSError as exc:
        return UNREADABLE, str(exc)
    if digest != attachment.compressed_md5:
        return BAD_CHECKSUM, f"MD5 is {digest}, the index recorded {attachment.compressed_md5}"
    return None


def _still_recorded(index: SqlIndex, owner: Resource, attachment: Attachment) -> bool:
    current = index.attachment(owner.id, attachment.content_type)
    return current is not None and current.uuid == attachment.uuid


def _forget(server: Server, owner: Resource, report: CheckReport) -> None:
    """Delete the owner as a REST DELETE would: change log, empty parents, other files."""
    outcome = server.delete(owner)
    deleted = ", ".join(f"{level.title} {public_id}" for level, public_id in outcome.deleted)
    report.actions.append(f"deleted from the index: {deleted}")


def _job_outputs(server: Server) -> set[str]:
    """Files that jobs produced (archives...): referenced by their job, not orphans."""
    return {output["uuid"] for job in server.index.jobs.all()
            for output in job.outputs.values()}


def _check_orphans(storage: StorageArea, referenced: set[str], cutoff: float,
                   report: CheckReport) -> None:
    for uuid, mtime in storage.scan():
        if uuid in referenced:
            continue
        if mtime >= cutoff:
            report.spared += 1
            continue
        report.findings.append(Finding(ORPHAN, uuid, "no attachment refers to it"))
        if report.repair:
            storage.remove(uuid)
            report.actions.append(f"removed orphan file {uuid}")
