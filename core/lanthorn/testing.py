"""Pytest fixtures for Lanthorn and its plugins (published through ``pytest11``).

- ``lanthorn_config``: a Config on a temporary folder and free ports (and, for tests
  marked ``all_index_backends``, on each index backend in turn: ``lanthorn_index_backend``);
- ``lanthorn_server``: a Server built from it, without installed entry points (add
  plugins with ``@pytest.mark.lanthorn_plugins(module, ...)``), started and closed;
- ``lanthorn_make_server``: builds more Servers like it (on another config, say);
- ``lanthorn_client``: an in-process HTTP client for that server's REST API;
- ``lanthorn_process``: a real ``lanthorn serve`` subprocess (uvicorn and the DICOM
  listener on loopback), for tests that need real sockets, signals or ``kill -9``;
- ``free_port()``: a free TCP port on loopback;
- ``make_instance()``: the bytes of a small, valid DICOM file with the tags you ask for;
- ``make_image()``: the same for an image of the pixels you give (numpy), in any
  photometric interpretation, bit depth, sign or number of frames.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from .config import Config
from .server import Server


def free_port() -> int:
    """A loopback port nothing uses now, below the kernel's range of ephemeral ports.

    A port from that range (what binding port 0 gives) may become the source port of any
    outgoing connection before the server binds it, which then fails ("address already
    in use": seen about once in 50 runs of the DICOM tests, whose clients open many).
    """
    below = _first_ephemeral_port()
    upper = below if below > FIRST_TEST_PORT + 1000 else 65536  # no room below that range
    while True:
        port = _PORTS.randrange(FIRST_TEST_PORT, upper)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


#: Where test ports start: above the well-known and most registered service ports.
FIRST_TEST_PORT = 10000
#: A generator of its own: a test seeding ``random`` must not make parallel workers
#: draw the same ports.
_PORTS = random.Random()


def _first_ephemeral_port() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):  # not Linux: the IANA dynamic range
        return 49152


CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def make_instance(*, rows: int = 8, columns: int = 8, seed: int | None = None,
                  **tags: Any) -> bytes:
    """A CT-like DICOM file (explicit VR little endian, 16-bit pixels) as bytes.

    Keyword arguments set tags by keyword (``PatientName="DOE^JOHN"``); the UIDs are
    new unless given. ``seed`` makes the pixel bytes (and nothing else) repeatable.
    """
    dataset = _new_dataset(tags)
    dataset.Rows, dataset.Columns = rows, columns
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
    dataset.PixelRepresentation = 0
    dataset.PixelData = random.Random(seed).randbytes(rows * columns * 2)
    return _file(dataset)


def make_image(pixels: np.ndarray, *, photometric: str = "MONOCHROME2",
               bits_stored: int | None = None, **tags: Any) -> bytes:
    """An image of these pixels (explicit VR little endian, native pixel data).

    ``pixels`` is (rows, columns), (rows, columns, 3) for RGB, or either with the frames
    first; its dtype gives BitsAllocated and the sign. Tags as in ``make_instance``.
    """
    color = photometric in ("RGB", "YBR_FULL")
    frames = pixels.ndim == (4 if color else 3)
    dataset = _new_dataset(tags)
    if frames:
        dataset.NumberOfFrames = pixels.shape[0]
    dataset.Rows, dataset.Columns = pixels.shape[1:3] if frames else pixels.shape[:2]
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = (3 if color else 1), photometric
    if color:
        dataset.PlanarConfiguration = 0
    bits = pixels.dtype.itemsize * 8
    dataset.BitsAllocated, dataset.BitsStored = bits, bits_stored or bits
    dataset.HighBit = dataset.BitsStored - 1
    dataset.PixelRepresentation = int(pixels.dtype.kind == "i")
    dataset.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    return _file(dataset)


def _new_dataset(tags: dict[str, Any]) -> Dataset:
    """A CT-like dataset with new UIDs, then ``tags`` set by keyword."""
    dataset = Dataset()
    dataset.SOPClassUID = CT_IMAGE_STORAGE
    dataset.SOPInstanceUID = generate_uid()
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.PatientID = "PATIENT"
    dataset.PatientName = "TEST^PATIENT"
    dataset.Modality = "CT"
    dataset.StudyDate = "20260101"
    dataset.InstanceNumber = 1
    for keyword, value in tags.items():
        setattr(dataset, keyword, value)
    return dataset


def _file(dataset: Dataset) -> bytes:
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def require_tool(name: str, package: str | None = None) -> str:
    """The path of a system tool; skip the test when missing (a failure under CI).

    ``.ci/run`` sets ``LANTHORN_REQUIRE_TOOLS=1`` so that a missing tool cannot hide
    behind a skip there.
    """
    path = system_tool(name)
    if path:
        return path
    missing(f"{name} is not installed (apt-get install {package or name})")


def system_tool(name: str) -> str | None:
    """The path of a program of the system (``shutil.which``), never one of this Python
    environment's scripts: pynetdicom installs apps named like DCMTK's (``storescu``,
    ``findscu``, ``storescp``...) with other options, which an activated virtual
    environment puts first on the PATH."""
    scripts = Path(sysconfig.get_path("scripts")).resolve()
    search = os.environ.get("PATH", os.defpath).split(os.pathsep)
    return shutil.which(name, path=os.pathsep.join(
        folder for folder in search if folder and Path(folder).resolve() != scripts))


def missing(message: str) -> NoReturn:
    """Skip a test (or, called at its top level, a module) that lacks something of this
    machine; fail it under CI instead."""
    if os.environ.get("LANTHORN_REQUIRE_TOOLS"):
        pytest.fail(message)
    pytest.skip(message, allow_module_level=True)


@dataclass(frozen=True)
class IndexBackendUnderTest:
    """An index backend for the tests: the options that select it (a fresh, empty
    database) and the plugin objects an in-process server must load for it."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    plugins: tuple[object, ...] = ()


#: Index backends that tests marked ``all_index_backends`` run on. A backend other than
#: SQLite comes from its plugin's fixture ``lanthorn_index_backend_<name>``.
TESTED_INDEX_BACKENDS = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("all_index_backends") \
            and "lanthorn_index_backend" in metafunc.fixturenames:
        metafunc.parametrize("lanthorn_index_backend", TESTED_INDEX_BACKENDS, indirect=True)


@pytest.fixture
def lanthorn_index_backend(request: pytest.FixtureRequest) -> IndexBackendUnderTest:
    """SQLite, unless the test is parametrized over ``TESTED_INDEX_BACKENDS``."""
    name = getattr(request, "param", "sqlite")
    if name == "sqlite":
        return IndexBackendUnderTest(name)
    try:
        return request.getfixturevalue(f"lanthorn_index_backend_{name}")
    except pytest.FixtureLookupError:
        missing(f"the {name} index backend is not installed (its plugin provides the "
                f"fixture lanthorn_index_backend_{name})")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "lanthorn_plugins(*plugins): plugin objects the lanthorn_server loads")
    config.addinivalue_line(
        "markers", "lanthorn_config(**options): options the lanthorn_config fixture sets")
    config.addinivalue_line(
        "markers", "all_index_backends: run the test on every index backend "
        "(TESTED_INDEX_BACKENDS), each on a throwaway database")


@pytest.fixture
def lanthorn_config(request: pytest.FixtureRequest, tmp_path: Path,
                    lanthorn_index_backend: IndexBackendUnderTest) -> Config:
    options: dict[str, Any] = {
        "StorageDirectory": str(tmp_path / "storage"),
        "HttpPort": free_port(),
        "DicomPort": free_port(),
        "StableAge": 1,
        **lanthorn_index_backend.options,
    }
    # Farthest first (module, class, function), so the closest marker wins.
    for marker in reversed(list(request.node.iter_markers("lanthorn_config"))):
        options = {**options, **marker.kwargs}
    return Config.defaults().with_overrides(**options)


@pytest.fixture
def lanthorn_make_server(lanthorn_index_backend: IndexBackendUnderTest) -> Callable[..., Server]:
    """``lanthorn_make_server(config, plugins=())``: a Server (not started; close it) without
    installed entry points, with the plugins the test's index backend needs."""

    def make(config: Config, plugins: Iterable[object] = ()) -> Server:
        return Server(config, load_entry_points=False,
                      plugins=[*lanthorn_index_backend.plugins, *plugins])

    return make


@pytest.fixture
def lanthorn_server(request: pytest.FixtureRequest, lanthorn_config: Config,
                    lanthorn_make_server: Callable[..., Server]) -> Iterator[Server]:
    server = lanthorn_make_server(
        lanthorn_config, [p for m in request.node.iter_markers("lanthorn_plugins") for p in m.args])
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.close()


@pytest.fixture
def lanthorn_client(lanthorn_server: Server) -> Iterator[Any]:
    from starlette.testclient import TestClient

    with TestClient(lanthorn_server.app, client=("127.0.0.1", 50000)) as client:
        yield client


@dataclass
class ServerProcess:
    """A ``lanthorn serve`` child process and how to reach it."""

    config_path: Path
    http_port: int
    dicom_port: int
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    https: bool = False
    #: httpx arguments (``verify``, ``auth``) with which ``wait_ready`` reaches the server.
    client_options: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"{'https' if self.https else 'http'}://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 30) -> ServerProcess:
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the handle
            # A session of its own: kill_group() can then take the workers down with it.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lanthorn", "serve", "--config", str(self.config_path),
                 *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        import httpx2

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"lanthorn serve exited:\n{self.log_path.read_text()}")
            try:
                # With authentication on, a 401 is an answer too.
                if httpx2.get(self.url + "/system", timeout=1,
                              **self.client_options).status_code in (200, 401):
                    return
            except httpx2.HTTPError:
                time.sleep(0.1)
        raise TimeoutError(f"lanthorn serve did not answer:\n{self.log_path.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """``kill -9`` of the server process alone (with ``--workers``, the supervisor).

        Returns once its workers are gone too (they must die with it), so that a
        restart finds the ports free.
        """
        self._kill(lambda process: process.send_signal(signal.SIGKILL))

    def kill_group(self) -> None:
        """``kill -9`` of all its processes at once, as when the machine loses power."""
        self._kill(lambda process: os.killpg(process.pid, signal.SIGKILL)
                   if process.poll() is None else None)

    def _kill(self, send: Callable[[subprocess.Popen[bytes]], None]) -> None:
        if self.process is None:
            return
        processes = [self.process.pid, *self.workers()]
        send(self.process)
        self.process.wait(30)
        if survivors := wait_for_exit(processes, 30):
            raise TimeoutError(f"processes of lanthorn serve survived SIGKILL: {survivors}")

    def workers(self) -> list[int]:
        """The PIDs of the worker processes (none without ``--workers``)."""
        if self.process is None:
            return []
        pid = self.process.pid
        try:
            return [int(child) for child in
                    Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except FileNotFoundError:  # the supervisor is gone
            return []

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``lanthorn ARGS --config`` on this server's configuration."""
        return subprocess.run(
            [sys.executable, "-m", "lanthorn", *args, "--config", str(self.config_path)],
            capture_output=True, text=True, timeout=timeout)


def wait_for_exit(pids: list[int], timeout: float) -> list[int]:
    """Wait until these processes are gone; return those still running at the timeout.

    A zombie counts as gone: it holds no socket any more.
    """
    deadline = time.monotonic() + timeout
    while (running := [pid for pid in pids if _running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.01)
    return running


def _running(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


@pytest.fixture
def lanthorn_process(lanthorn_config: Config, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server process on ``lanthorn_config`` (not started: call ``.start()``)."""
    config_path = tmp_path / "lanthorn.json"
    options = {key: lanthorn_config[key] for key in lanthorn_config.user_keys()}
    config_path.write_text(json.dumps({**options, "DicomBindAddress": "127.0.0.1",
                                       "HttpBindAddress": "127.0.0.1"}))
    child = ServerProcess(config_path, lanthorn_config["HttpPort"], lanthorn_config["DicomPort"],
                          tmp_path / "server.log", https=bool(lanthorn_config["SslEnabled"]))
    try:
        yield child
    finally:
        child.kill_group()
