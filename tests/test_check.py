"""``lanthorn check [--repair]``: missing, corrupt and orphan files, for real."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from lanthorn import Server
from lanthorn.config import Config
from lanthorn.ingest import DICOM_ATTACHMENT
from lanthorn.model import ChangeType, Level
from lanthorn.testing import ServerProcess, make_instance
from lanthorn.types import Origin, StoredInstance

pytestmark = pytest.mark.all_index_backends

ELEVEN_MINUTES = 11 * 60


OpenServer = Callable[[Config], AbstractContextManager[Server]]


@pytest.fixture
def open_server(lanthorn_make_server: Callable[[Config], Server]) -> OpenServer:
    """``with open_server(config) as server``: a server on the test's index backend."""

    @contextmanager
    def open_(config: Config) -> Iterator[Server]:
        server = lanthorn_make_server(config)
        try:
            yield server
        finally:
            server.close()

    return open_


@pytest.fixture
def stored(lanthorn_config: Config, open_server: OpenServer) -> list[StoredInstance]:
    """Two instances of one patient, each in its own study."""
    with open_server(lanthorn_config) as server:
        return [server.ingest.store(make_instance(), Origin()) for _ in range(2)]


def lanthorn_check(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lanthorn", "check", "--config", str(server.config_path), *args],
        capture_output=True, text=True, timeout=60)


def stored_file(open_server: OpenServer, config: Config, instance: StoredInstance) -> Path:
    with open_server(config) as server:
        resource = server.index.lookup(instance.id)
        assert resource is not None
        attachment = server.index.attachment(resource.id, DICOM_ATTACHMENT)
    assert attachment is not None
    return storage_path(config, attachment.uuid)


def storage_path(config: Config, name: str) -> Path:
    return Path(config["StorageDirectory"], name[:2], name[2:4], name)


def stray_file(config: Config, age: float = 0) -> Path:
    path = storage_path(config, str(uuid.uuid4()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"left by a crash")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def assert_consistent(process: ServerProcess) -> None:
    result = lanthorn_check(process)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.endswith("Consistent\n")


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("compression", [
    pytest.param(False, id="plain"),
    pytest.param(True, id="zlib", marks=pytest.mark.lanthorn_config(StorageCompression=True)),
])
@pytest.mark.usefixtures("stored")
def test_clean_store_is_consistent(lanthorn_process: ServerProcess, compression: bool) -> None:
    result = lanthorn_check(lanthorn_process)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Checked 2 attachments" in result.stdout
    for kind in ("missing files", "bad checksums", "orphan files"):
        assert f"{kind}: 0\n" in result.stdout


@pytest.mark.parametrize(("damage", "kind"), [
    (Path.unlink, "missing files"),
    (flip_last_byte, "bad checksums"),
])
def test_lost_file_is_reported_then_its_instance_deleted(
        damage: Callable[[Path], None], kind: str, lanthorn_process: ServerProcess,
        lanthorn_config: Config, stored: list[StoredInstance], open_server: OpenServer) -> None:
    lost, kept = stored
    path = stored_file(open_server, lanthorn_config, lost)
    damage(path)

    found = lanthorn_check(lanthorn_process)
    assert found.returncode == 1, found.stdout + found.stderr
    assert f"{kind}: 1\n  {path.name}: " in found.stdout
    assert f"(Instance {lost.id})" in found.stdout

    repaired = lanthorn_check(lanthorn_process, "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    patient, study, series, instance = lost.public_ids
    assert (f"Repaired: deleted from the index: Instance {instance}, Series {series}, "
            f"Study {study}\n") in repaired.stdout
    assert not path.exists()
    with open_server(lanthorn_config) as server:
        assert server.index.lookup(instance) is None
        assert server.index.lookup(study) is None
        assert server.index.lookup(kept.id) is not None
        assert server.index.lookup(patient) is not None  # still has the other study
        deleted = [(c.level, c.public_id) for c in server.index.changes(limit=1000)
                   if c.change_type == ChangeType.Deleted]
    assert deleted == [(Level.INSTANCE, instance), (Level.SERIES, series), (Level.STUDY, study)]
    assert_consistent(lanthorn_process)


@pytest.mark.usefixtures("stored")
def test_orphan_files_are_removed_without_a_live_server(
        lanthorn_process: ServerProcess, lanthorn_config: Config) -> None:
    orphan = stray_file(lanthorn_config)

    found = lanthorn_check(lanthorn_process)
    assert found.returncode == 1, found.stdout + found.stderr
    assert f"orphan files: 1\n  {orphan.name}: no attachment refers to it\n" in found.stdout
    assert orphan.exists()

    repaired = lanthorn_check(lanthorn_process, "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert f"Repaired: removed orphan file {orphan.name}\n" in repaired.stdout
    assert not orphan.exists()
    assert_consistent(lanthorn_process)


@pytest.mark.usefixtures("stored")
def test_recent_files_are_spared_while_a_server_holds_a_lease(
        lanthorn_process: ServerProcess, lanthorn_config: Config,
        open_server: OpenServer) -> None:
    in_flight, old = stray_file(lanthorn_config), stray_file(lanthorn_config, ELEVEN_MINUTES)
    with open_server(lanthorn_config) as server:  # as a running server's event loop does
        assert server.index.acquire_lease("events", "elsewhere:42:cafe", 60)

    repaired = lanthorn_check(lanthorn_process, "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "A server or import is running (elsewhere:42:cafe)" in repaired.stdout
    assert f"orphan files: 1\n  {old.name}: " in repaired.stdout
    assert "Left alone: 1 recent" in repaired.stdout
    assert in_flight.exists() and not old.exists()
    assert_consistent(lanthorn_process)  # a file that may be in flight is no inconsistency
