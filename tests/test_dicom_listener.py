"""The DICOM listener of ``lanthorn serve`` against real peers: DCMTK and pynetdicom."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import httpx2
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from lanthorn.testing import ServerProcess, make_instance, require_tool

CT_SMALL = get_testdata_file("CT_small.dcm")
MR_RLE = get_testdata_file("MR_small_RLE.dcm")


@pytest.fixture
def server(lanthorn_process: ServerProcess) -> ServerProcess:
    return lanthorn_process.start()


def test_dcmtk_echoscu_gets_success(server: ServerProcess) -> None:
    echoscu = require_tool("echoscu", "dcmtk")
    done = subprocess.run([echoscu, "-aec", "LANTHORN", "127.0.0.1", str(server.dicom_port)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_dcmtk_storescu_stores_bytes_as_sent(server: ServerProcess, tmp_path: Path) -> None:
    storescu = require_tool("storescu", "dcmtk")
    for path, proposal in ((CT_SMALL, "-xe"), (MR_RLE, "-xr")):  # the file's own syntax
        done = subprocess.run(
            [storescu, "-R", proposal, "-aet", "MODALITY", "-aec", "LANTHORN", "127.0.0.1",
             str(server.dicom_port), path], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    with httpx2.Client(base_url=server.url) as http:
        for path in (CT_SMALL, MR_RLE):
            uid = dcmread(path).SOPInstanceUID
            [found] = http.post("/tools/lookup", content=uid).json()
            stored = http.get(f"/instances/{found['ID']}/file").content
            # storescu sends the data set; the file meta is ours, the data set is as sent.
            assert dcmread(path).PixelData == dcmread(_write(tmp_path, stored)).PixelData
            metadata = http.get(f"/instances/{found['ID']}/metadata?expand").json()
            assert metadata["RemoteAET"] == "MODALITY"
            assert metadata["CalledAET"] == "LANTHORN"
            assert metadata["Origin"] == "DicomProtocol"
            assert metadata["RemoteIP"] == "127.0.0.1"


def _write(folder: Path, data: bytes) -> Path:
    path = folder / "received.dcm"
    path.write_bytes(data)
    return path


def test_pynetdicom_store_and_refusal_of_a_dataset_without_uids(server: ServerProcess) -> None:
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    association = ae.associate("127.0.0.1", server.dicom_port, ae_title="LANTHORN")
    assert association.is_established
    try:
        good = dcmread(_bytes_file(make_instance(PatientID="NET1")))
        assert association.send_c_store(good).Status == 0x0000
        bad = dcmread(_bytes_file(make_instance(PatientID="NET2")))
        del bad.SeriesInstanceUID
        status = association.send_c_store(bad).Status
        assert status == 0xC000  # cannot understand: nothing stored
    finally:
        association.release()
    with httpx2.Client(base_url=server.url) as http:
        patients = http.get("/patients?expand").json()
    assert [p["MainDicomTags"]["PatientID"] for p in patients] == ["NET1"]


def _bytes_file(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


@pytest.mark.parametrize(("sop_instance", "syntax"), [
    ("1.2.3.4", "1.2.840.10008.1.2.1"),  # an odd length: padded
    ("1.2.3.45", "1.2.840.10008.1.2"),  # an even one
])
def test_received_file_meta_is_what_pydicom_and_pynetdicom_write(sop_instance: str,
                                                                 syntax: str) -> None:
    """The listener encodes a received data set's File Meta Information itself (for
    speed); it must be byte for byte what ``Event.encoded_dataset`` gave."""
    from pydicom.uid import UID
    from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
    from pynetdicom.dsutils import create_file_meta, encode_file_meta

    from lanthorn.dicom import file_meta_information

    expected = b"\0" * 128 + b"DICM" + encode_file_meta(create_file_meta(
        sop_class_uid=UID(CTImageStorage), sop_instance_uid=UID(sop_instance),
        transfer_syntax=UID(syntax)))
    assert file_meta_information(
        CTImageStorage, sop_instance, syntax,
        (PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION)) == expected
