"""``lanthorn import``: folders, nested files, ZIP archives and junk, through the ingest path."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from lanthorn import Server, hookimpl
from lanthorn.config import Config
from lanthorn.importer import import_paths
from lanthorn.model import Level, public_ids
from lanthorn.testing import ServerProcess, make_instance

pytestmark = pytest.mark.all_index_backends

DICOMDIR_CLASS = "1.2.840.10008.1.3.10"


def lanthorn_import(server: ServerProcess, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lanthorn", "import", "--config", str(server.config_path),
         *map(str, paths)], capture_output=True, text=True, timeout=60)


def instance_id(data: bytes) -> str:
    dataset = pydicom.dcmread(io.BytesIO(data))
    uids = (dataset.PatientID, dataset.StudyInstanceUID, dataset.SeriesInstanceUID,
            dataset.SOPInstanceUID)
    return public_ids(uids)[Level.INSTANCE]


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, list[str]]:
    """Nested DICOM files, a ZIP (DICOM + text), a README and a DICOMDIR-like file."""
    root = tmp_path / "source"
    (root / "a" / "b").mkdir(parents=True)
    files = {root / "a" / "one.dcm": make_instance(), root / "a" / "b" / "two.dcm":
             make_instance()}
    for path, data in files.items():
        path.write_bytes(data)
    members = {"x/three.dcm": make_instance(), "four.dcm": make_instance()}
    with zipfile.ZipFile(root / "a" / "archive.zip", "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        archive.writestr("notes.txt", "not DICOM")
    (root / "README").write_text("not DICOM either")
    (root / "DICOMDIR").write_bytes(make_instance(SOPClassUID=DICOMDIR_CLASS))
    return root, [instance_id(d) for d in (*files.values(), *members.values())]


def stored_instances(make_server: Callable[[Config], Server], config: Config) -> list[str]:
    server = make_server(config)
    try:
        return [public_id for _, public_id in server.index.list_resources(Level.INSTANCE)]
    finally:
        server.close()


def test_import_stores_nested_files_and_zip_members_and_skips_junk(
        lanthorn_process: ServerProcess, lanthorn_config: Config,
        source: tuple[Path, list[str]], lanthorn_make_server: Callable[[Config], Server]) -> None:
    root, expected = source
    result = lanthorn_import(lanthorn_process, root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Files seen:       7 (ZIP members included)" in result.stdout
    assert "ZIP archives:     1" in result.stdout
    assert "Instances stored: 4" in result.stdout
    assert "Skipped:          3" in result.stdout
    assert f"  {root / 'a' / 'archive.zip'}:notes.txt: " in result.stdout
    assert f"  {root / 'README'}: Cannot parse" in result.stdout
    assert f"  {root / 'DICOMDIR'}: A DICOMDIR cannot be stored" in result.stdout
    assert "Failures:         0" in result.stdout
    assert sorted(stored_instances(lanthorn_make_server, lanthorn_config)) == sorted(expected)


def test_reimport_reports_already_stored(lanthorn_process: ServerProcess,
                                         source: tuple[Path, list[str]]) -> None:
    root, _ = source
    assert lanthorn_import(lanthorn_process, root).returncode == 0
    again = lanthorn_import(lanthorn_process, root / "a")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Instances stored: 0" in again.stdout
    assert "Already stored:   4" in again.stdout


def test_unreadable_member_and_missing_path_are_failures(
        lanthorn_process: ServerProcess, lanthorn_config: Config, tmp_path: Path,
        lanthorn_make_server: Callable[[Config], Server]) -> None:
    good, damaged = make_instance(), make_instance()
    archive_path = tmp_path / "damaged.zip"
    with zipfile.ZipFile(archive_path, "w") as archive:
        archive.writestr("good.dcm", good)
        archive.writestr("bad.dcm", damaged)
    raw = bytearray(archive_path.read_bytes())
    at = raw.index(damaged[200:240])  # stored uncompressed: flip a byte of its data
    raw[at] ^= 0xFF
    archive_path.write_bytes(bytes(raw))

    result = lanthorn_import(lanthorn_process, archive_path, tmp_path / "absent")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Instances stored: 1" in result.stdout
    assert "Failures:         2" in result.stdout
    assert f"  {archive_path}:bad.dcm: Cannot read: Bad CRC-32" in result.stdout
    assert f"  {tmp_path / 'absent'}: No such file or folder" in result.stdout
    assert stored_instances(lanthorn_make_server, lanthorn_config) == [instance_id(good)]


class LeaseProbe:
    """Records which leases are live while each instance is stored."""

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    @hookimpl
    def on_stored_instance(self, server: Server) -> None:
        self.seen.append(server.index.live_lease_holders())


def test_import_holds_a_lease_and_draws_progress(
        lanthorn_config: Config, source: tuple[Path, list[str]],
        capsys: pytest.CaptureFixture[str], lanthorn_make_server: Callable[..., Server]) -> None:
    probe = LeaseProbe()
    server = lanthorn_make_server(lanthorn_config, [probe])
    try:
        report = import_paths(server, [str(source[0])], progress=True)
        assert server.index.live_lease_holders() == []
    finally:
        server.close()
    assert report.stored == 4 and not report.failures
    assert probe.seen == [[server.identity]] * 4
    progress = capsys.readouterr().err
    assert progress.startswith("\r") and progress.endswith("\n")
    assert "7 files, 4 stored, 0 already stored, 3 not stored" in progress
    assert "files/s" in progress
