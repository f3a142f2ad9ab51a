"""Lanthorn's SCU side against DCMTK's servers: store to ``storescp`` (also as the
destination of a C-MOVE that ``movescu`` asks of Lanthorn), and query and retrieve
(C-MOVE and C-GET) from ``dcmqrscp``, over real associations."""

from __future__ import annotations

import io
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dimse_peers import SCU_AET, dcmtk, listening
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from starlette.testclient import TestClient

import lanthorn
from lanthorn.config import Config
from lanthorn.testing import free_port, make_instance, require_tool

QR_AET = "DCMQR"


@pytest.fixture
def dcmtk_port() -> int:
    return free_port()


@pytest.fixture
def lanthorn_config(lanthorn_config: Config, dcmtk_port: int) -> Config:
    return lanthorn_config.with_overrides(DicomBindAddress="127.0.0.1", DicomModalities={
        "dcmtk": [QR_AET, "127.0.0.1", dcmtk_port]})


@pytest.fixture
def client(lanthorn_server: lanthorn.Server, lanthorn_client: TestClient
           ) -> Iterator[TestClient]:
    with listening(lanthorn_server):
        yield lanthorn_client


def running(command: list[str], port: int) -> subprocess.Popen[bytes]:
    """Start a DCMTK server and wait until its port accepts connections."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, command
            time.sleep(0.05)


def stopped(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait(30)


def test_store_to_storescp(client: TestClient, dcmtk_port: int, tmp_path: Path) -> None:
    storescp = require_tool("storescp", "dcmtk")
    received = tmp_path / "received"
    received.mkdir()
    data = [make_instance(PatientID="P1", StudyInstanceUID="1.2.9") for _ in range(3)]
    for instance in data:
        client.post("/instances", content=instance)
    [study] = client.get("/studies").json()
    process = running([storescp, "-aet", QR_AET, "-od", str(received), str(dcmtk_port)],
                      dcmtk_port)
    try:
        answer = client.post("/modalities/dcmtk/store", json={"Resources": [study]})
    finally:
        stopped(process)
    assert answer.json()["FailedInstancesCount"] == 0
    sent = sorted(pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID for d in data)
    assert sorted(pydicom.dcmread(f).SOPInstanceUID for f in received.iterdir()) == sent


#: JPEG baseline (YBR colour), JPEG 2000 lossless, RLE (RGB): storescp takes none by default.
COMPRESSED = ("SC_rgb_jpeg_dcmtk.dcm", "MR_small_jp2klossless.dcm", "SC_rgb_rle.dcm")


@pytest.mark.parametrize(("option", "syntax"), [("+x=", ExplicitVRLittleEndian),
                                                ("+xi", ImplicitVRLittleEndian),
                                                ("+x=", None)],
                         ids=["uncompressed", "implicit-only", "transcoding-refused"])
def test_c_move_to_storescp_transcodes_what_it_refuses(
        lanthorn_server: lanthorn.Server, client: TestClient, dcmtk_port: int, tmp_path: Path,
        caplog: pytest.LogCaptureFixture, option: str, syntax: str | None) -> None:
    """storescp accepts uncompressed syntaxes only: compressed instances are decoded for
    it, to the same pixels, unless its ``AllowTranscoding`` is false."""
    storescp = require_tool("storescp", "dcmtk")
    lanthorn_server.config = lanthorn_server.config.with_overrides(DicomModalities={
        "movescu": [SCU_AET, "127.0.0.1", 104], "storescp": {
            "AET": QR_AET, "Host": "127.0.0.1", "Port": dcmtk_port,
            "AllowTranscoding": syntax is not None}})
    originals = {}
    for name in COMPRESSED:
        data = Path(get_testdata_file(name)).read_bytes()
        assert client.post("/instances", content=data).status_code == 200
        original = pydicom.dcmread(io.BytesIO(data))
        originals[original.SOPInstanceUID] = original
    received = tmp_path / "received"
    received.mkdir()
    process = running([storescp, option, "-aet", QR_AET, "-od", str(received), str(dcmtk_port)],
                      dcmtk_port)
    try:
        done = dcmtk("movescu", lanthorn_server.config["DicomPort"], "-S", "-aem", QR_AET,
                     "-k", "QueryRetrieveLevel=IMAGE",
                     "-k", "SOPInstanceUID=" + "\\".join(originals))
    finally:
        stopped(process)
    files = [pydicom.dcmread(path) for path in received.iterdir()]
    if syntax is None:
        assert "Final Move Response (Refused: OutOfResourcesSubOperations)" in done.stderr
        assert files == []
        assert caplog.text.count("instance <hidden> is stored in") == len(originals)
        assert "transcoding for it is off (AllowTranscoding" in caplog.text
        return
    assert "Received Final Move Response (Success)" in done.stderr, done.stderr
    assert sorted(f.SOPInstanceUID for f in files) == sorted(originals)
    for sent in files:
        assert sent.file_meta.TransferSyntaxUID == syntax
        assert (sent.pixel_array == originals[sent.SOPInstanceUID].pixel_array).all()


@pytest.fixture
def dcmqrscp(lanthorn_server: lanthorn.Server, dcmtk_port: int, tmp_path: Path
             ) -> Iterator[list[Any]]:
    """dcmqrscp with two studies indexed in its database; it knows Lanthorn as a move
    destination. Yields the stored datasets."""
    binary = require_tool("dcmqrscp", "dcmtk")
    indexer = require_tool("dcmqridx", "dcmtk")
    database = tmp_path / "qr"
    database.mkdir()
    datasets = []
    for number, study in enumerate(("1.2.1", "1.2.1", "1.2.2")):
        path = database / f"{number}.dcm"
        path.write_bytes(make_instance(PatientID="QR1", PatientName="QR^ONE",
                                       StudyInstanceUID=study, SeriesInstanceUID=study + ".1"))
        datasets.append(pydicom.dcmread(path))
        subprocess.run([indexer, str(database), str(path)], check=True, capture_output=True)
    config = tmp_path / "dcmqrscp.cfg"
    config.write_text(f"""
NetworkTCPPort = {dcmtk_port}
MaxPDUSize = 16384
MaxAssociations = 16
HostTable BEGIN
lanthorn = (LANTHORN, 127.0.0.1, {lanthorn_server.config["DicomPort"]})
HostTable END
VendorTable BEGIN
VendorTable END
AETable BEGIN
{QR_AET} {database} RW (10, 1024mb) ANY
AETable END
""")
    process = running([binary, "-c", str(config)], dcmtk_port)
    try:
        yield datasets
    finally:
        stopped(process)


@pytest.mark.parametrize("method", ["C-MOVE", "C-GET"])
def test_query_and_retrieve_from_dcmqrscp(client: TestClient, dcmqrscp: list[Any],
                                          method: str) -> None:
    query = client.post("/modalities/dcmtk/query", json={
        "Level": "Study", "Query": {"PatientID": "QR*", "PatientName": ""}})
    assert query.status_code == 200, query.text
    answers = client.get(f"{query.json()['Path']}/answers?expand&simplify").json()
    assert sorted(a["StudyInstanceUID"] for a in answers) == ["1.2.1", "1.2.2"]
    assert {a["PatientName"] for a in answers} == {"QR^ONE"}
    first = [a["StudyInstanceUID"] for a in answers].index("1.2.1")
    retrieved = client.post(f"{query.json()['Path']}/answers/{first}/retrieve",
                            json={"RetrieveMethod": method})
    assert retrieved.status_code == 200, retrieved.text
    stored = sorted(client.get(f"/instances/{i}/simplified-tags").json()["SOPInstanceUID"]
                    for i in client.get("/instances").json())
    assert stored == sorted(d.SOPInstanceUID for d in dcmqrscp if d.StudyInstanceUID == "1.2.1")
