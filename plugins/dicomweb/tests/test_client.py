"""The DICOMweb client (``DicomWeb.Servers``) against a second Lanthorn and, when the
Debian packages are installed, Orthanc with its DICOMweb plugin: real servers, real
HTTP both ways."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pydicom
import pytest

from lanthorn.testing import ServerProcess, free_port, make_instance

ORTHANC_DICOMWEB = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def _serve(folder: Path, servers: dict[str, object] | None = None) -> ServerProcess:
    folder.mkdir()
    http_port, dicom_port = free_port(), free_port()
    config = {"StorageDirectory": str(folder / "storage"), "HttpPort": http_port,
              "DicomPort": dicom_port, "HttpBindAddress": "127.0.0.1",
              "DicomBindAddress": "127.0.0.1", "DicomWeb": {"Servers": servers or {}}}
    (folder / "lanthorn.json").write_text(json.dumps(config))
    return ServerProcess(folder / "lanthorn.json", http_port, dicom_port, folder / "log")


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[ServerProcess]:
    process = _serve(tmp_path / "peer")
    try:
        yield process.start()
    finally:
        process.kill_group()


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[str]:
    """Orthanc 1.10 with its DICOMweb plugin on free ports (skipped when not installed)."""
    if not shutil.which("Orthanc") or not ORTHANC_DICOMWEB.exists():
        pytest.skip("Orthanc and its DICOMweb plugin are not installed "
                    "(apt-get install orthanc orthanc-dicomweb)")
    folder = tmp_path / "orthanc"
    folder.mkdir()
    port = free_port()
    (folder / "config.json").write_text(json.dumps({
        "StorageDirectory": str(folder), "IndexDirectory": str(folder), "HttpPort": port,
        "DicomPort": free_port(), "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "Plugins": [str(ORTHANC_DICOMWEB)],
        "DicomWeb": {"Enable": True}}))
    with open(folder / "log", "wb") as log:
        process = subprocess.Popen(["Orthanc", str(folder / "config.json")], stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.get(f"{url}/system", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError((folder / "log").read_text()) from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(30)


@contextmanager
def _client(tmp_path: Path, servers: dict[str, object]) -> Iterator[httpx2.Client]:
    process = _serve(tmp_path / "lanthorn", servers).start()
    try:
        with httpx2.Client(base_url=process.url, timeout=60) as http:
            yield http
    finally:
        process.kill_group()


def _uids(data: bytes) -> dict[str, str]:
    dataset = pydicom.dcmread(io.BytesIO(data))
    return {"Study": str(dataset.StudyInstanceUID), "Series": str(dataset.SeriesInstanceUID),
            "Instance": str(dataset.SOPInstanceUID)}


def test_servers_from_the_configuration(tmp_path: Path, peer: ServerProcess) -> None:
    servers = {"peer": [f"{peer.url}/dicom-web/"],
               "secret": {"Url": "http://archive.example/dicom-web", "Username": "me",
                          "Password": "hidden", "HttpHeaders": {"X-Token": "t"}}}
    with _client(tmp_path, servers) as http:
        assert http.get("/dicom-web/servers").json() == ["peer", "secret"]
        expanded = http.get("/dicom-web/servers?expand").json()
        assert expanded["secret"]["Username"] == "me" and "Password" not in expanded["secret"]
        assert expanded["secret"]["HttpHeaders"] == ["X-Token"]
        assert http.get("/dicom-web/servers/peer").json() == ["get", "qido", "retrieve", "stow"]
        missing = http.post("/dicom-web/servers/nope/qido", json={"Uri": "/studies"})
        assert missing.status_code == 404 and "nope" in missing.json()["Details"]


def test_qido_retrieve_and_stow_with_a_second_lanthorn(tmp_path: Path,
                                                       peer: ServerProcess) -> None:
    first, second = make_instance(PatientID="A"), make_instance(PatientID="B")
    httpx2.post(f"{peer.url}/instances", content=first).raise_for_status()
    with _client(tmp_path, {"peer": [f"{peer.url}/dicom-web"]}) as http:
        found = http.post("/dicom-web/servers/peer/qido",
                          json={"Uri": "/studies", "Arguments": {"PatientID": "A"}}).json()
        assert found[0]["0020000D"]["Value"] == [_uids(first)["Study"]]
        raw = http.post("/dicom-web/servers/peer/get", json={"Uri": "/studies"})
        assert raw.headers["content-type"] == "application/dicom+json"
        retrieved = http.post("/dicom-web/servers/peer/retrieve",
                              json={"Resources": [{"Study": _uids(first)["Study"]}]})
        assert retrieved.json() == {"NetworkUsageMB": "0", "ReceivedInstancesCount": "1"}
        ids = http.get("/instances").json()
        assert http.get(f"/instances/{ids[0]}/file").content == first
        stored = http.post("/instances", content=second).json()
        sent = http.post("/dicom-web/servers/peer/stow",
                         json={"Resources": [stored["ParentStudy"]]})
        assert sent.json() == {"InstancesCount": "1", "NetworkSizeMB": "0"}
    assert httpx2.get(f"{peer.url}/instances/{stored['ID']}/file").content == second


def test_unreachable_server_is_a_network_error(tmp_path: Path) -> None:
    with _client(tmp_path, {"gone": [f"http://127.0.0.1:{free_port()}/dicom-web"]}) as http:
        answer = http.post("/dicom-web/servers/gone/qido", json={"Uri": "/studies"})
        assert answer.status_code == 500
        assert "cannot reach gone" in answer.json()["Details"]
        bad = http.post("/dicom-web/servers/gone/qido", json={"Uri": "studies"})
        assert bad.status_code == 400


def test_retrieve_from_and_stow_to_orthanc(tmp_path: Path, orthanc: str) -> None:
    first, second = make_instance(PatientID="A"), make_instance(PatientID="B")
    httpx2.post(f"{orthanc}/instances", content=first).raise_for_status()
    with _client(tmp_path, {"orthanc": [f"{orthanc}/dicom-web/"]}) as http:
        retrieved = http.post("/dicom-web/servers/orthanc/retrieve",
                              json={"Resources": [_uids(first)]})
        assert retrieved.json()["ReceivedInstancesCount"] == "1"
        ids = http.get("/instances").json()
        assert http.get(f"/instances/{ids[0]}/file").content == first
        stored = http.post("/instances", content=second).json()
        sent = http.post("/dicom-web/servers/orthanc/stow", json={"Resources": [stored["ID"]]})
        assert sent.status_code == 200, sent.text
    assert httpx2.get(f"{orthanc}/instances/{stored['ID']}/file").content == second
