"""What the filesystem storage area flushes before a write returns, and where."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lanthorn import storage
from lanthorn.storage import FilesystemStorage, filesystem_type, new_uuid

MOUNTS = r"""/dev/vda / ext4 rw,relatime 0 0
tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0
server:/export /mnt/pacs\040archive nfs4 rw 0 0
/dev/vdb /mnt/pacs\040archive/fast xfs rw 0 0
/dev/vdc /srv ext4 rw 0 0
server:/srv /srv nfs rw 0 0
"""


@pytest.mark.parametrize(("path", "kind"), [
    ("/var/lib/lanthorn", "ext4"),
    ("/dev/shm/lanthorn", "tmpfs"),
    ("/mnt/pacs archive/storage", "nfs4"),  # a space, escaped in the mounts
    ("/mnt/pacs archive/fast/storage", "xfs"),  # the deepest mount point
    ("/mnt/pacs archivex", "ext4"),  # a longer name is not inside the mount
    ("/srv/storage", "nfs"),  # mounted over: the last mount shows
])
def test_a_path_is_on_its_deepest_mount(path: str, kind: str) -> None:
    assert filesystem_type(Path(path), MOUNTS) == kind


@pytest.mark.skipif(shutil.which("findmnt") is None or not Path("/proc/self/mounts").exists(),
                    reason="needs Linux and util-linux's findmnt")
@pytest.mark.parametrize("path", [Path(__file__), Path("/dev/shm")])
def test_the_filesystem_type_is_the_kernels(path: Path) -> None:
    found = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", str(path)],
                           capture_output=True, text=True, check=True).stdout.split()
    assert filesystem_type(path) == found[-1]  # of mounts stacked on one point, the top


@pytest.mark.parametrize(("kind", "folders_flushed"), [("ext4", False), ("xfs", False),
                                                        ("btrfs", False), ("nfs4", True),
                                                        ("tmpfs", True), ("", True)])
def test_folders_are_flushed_where_a_files_flush_does_not_record_its_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str,
        folders_flushed: bool) -> None:
    monkeypatch.setattr(storage, "filesystem_type", lambda path: kind)
    area = FilesystemStorage(tmp_path)
    flushed: list[Path] = []
    fsync = os.fsync

    def recorded(descriptor: int) -> None:
        flushed.append(Path(os.readlink(f"/proc/self/fd/{descriptor}")))
        fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recorded)
    uuid = new_uuid()
    area.write(uuid, b"instance")  # its two fan-out folders are new

    file = area.path(uuid)
    assert flushed[0] == file
    folders = {file.parent, file.parent.parent, tmp_path} if folders_flushed else set()
    assert set(flushed[1:]) == folders and len(flushed) == 1 + len(folders)
    assert file.read_bytes() == b"instance"

    flushed.clear()
    neighbour = uuid[:4] + new_uuid()[4:]  # into the same folder: only its entry changes
    area.write(neighbour, b"another")
    assert flushed == [area.path(neighbour), *([file.parent] if folders_flushed else [])]


def test_nothing_is_flushed_without_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    area = FilesystemStorage(tmp_path, sync=False)
    monkeypatch.setattr(os, "fsync", lambda descriptor: pytest.fail("flushed"))
    area.write(new_uuid(), b"instance")
    assert not area.sync_folders
