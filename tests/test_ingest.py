"""The ingest path through POST /instances: refusals, duplicates, ZIP batches, metadata,
change log and storage compression."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy import event

from lanthorn import Origin
from lanthorn.index.records import Attachment, NewInstance
from lanthorn.ingest import HASHED_BESIDE_BYTES
from lanthorn.model import public_ids
from lanthorn.testing import make_instance

pytestmark = pytest.mark.all_index_backends

SHAPES = json.loads((Path(__file__).parent / "fixtures" / "orthanc_shapes.json").read_text())
TEST_FILES = Path(get_testdata_file("CT_small.dcm")).parent
MakeInstance = Callable[..., bytes]
State = Callable[[], object]


def _uids() -> dict[str, str]:
    return {k: generate_uid() for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")}


def _stored_files(config: Any) -> set[str]:
    storage = Path(config["StorageDirectory"])
    return {p.name for p in storage.glob("[0-9a-f][0-9a-f]/[0-9a-f][0-9a-f]/*")}


def _with_vr(make: MakeInstance, vr: bytes, *, in_sequence: bool = False) -> bytes:
    """An instance with a 4-byte value (0018,9087) whose VR is then patched to ``vr``."""
    dataset = pydicom.dcmread(io.BytesIO(make()))
    holder = pydicom.Dataset()
    holder.add_new(0x00189087, "LO", "abcd")
    if in_sequence:
        dataset.ContentSequence = [holder]
    else:
        dataset.update(holder)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    at = data.index(b"\x18\x00\x87\x90LO") + 4
    return data[:at] + vr + data[at + 2:]


BAD_INPUTS = {
    "empty": (lambda make: b"", "Received an empty DICOM file"),
    "not DICOM": (lambda make: b"hello", "Cannot parse an invalid DICOM file (size: 5 bytes)"),
    "DICOMDIR": (lambda make: (TEST_FILES / "dicomdirtests" / "DICOMDIR").read_bytes(),
                 "DICOMDIR"),
    "no SOPInstanceUID": (lambda make: make(SOPInstanceUID=None), "SOPInstanceUID"),
    "truncated": (lambda make: make()[:-1000], "truncated"),
    # Values are decoded when read, not at ingest: what pydicom could never decode is
    # refused up front all the same, at any depth.
    "unknown VR": (lambda make: _with_vr(make, b"ZZ"), "0018,9087 has an unknown VR ('ZZ')"),
    "FD of 4 bytes": (lambda make: _with_vr(make, b"FD"), "4 bytes, not a multiple of 8"),
    "FD of 4 bytes in a sequence": (lambda make: _with_vr(make, b"FD", in_sequence=True),
                                    "0018,9087 has 4 bytes"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_refused_and_leaves_nothing(
        case: str, lanthorn_client: Any, ct_instance: MakeInstance, server_state: State) -> None:
    make_body, details = BAD_INPUTS[case]
    lanthorn_client.post("/instances", content=ct_instance())
    before = server_state()
    response = lanthorn_client.post("/instances", content=make_body(ct_instance))
    assert response.status_code == 400
    body = response.json()
    assert {k: body[k] for k in ("HttpStatus", "Message", "OrthancStatus", "Method", "Uri")} \
        == {"HttpStatus": 400, "Message": "Bad file format", "OrthancStatus": 15,
            "Method": "POST", "Uri": "/instances"}
    assert details in body["Details"]
    assert server_state() == before


def test_error_answers_start_like_orthancs(lanthorn_client: Any) -> None:
    for label, body in (("(empty body)", b""), ("(hello)", b"hello")):
        orthanc = SHAPES[f"POST /instances {label}"]["body"]
        ours = lanthorn_client.post("/instances", content=body).json()
        assert set(ours) == set(orthanc)
        assert {k: v for k, v in ours.items() if k != "Details"} == \
            {k: v for k, v in orthanc.items() if k != "Details"}
        assert ours["Details"].startswith(orthanc["Details"])


@pytest.mark.parametrize("overwrite", [
    pytest.param(overwrite, marks=pytest.mark.lanthorn_config(OverwriteInstances=overwrite))
    for overwrite in (False, True)])
def test_duplicate_instance(overwrite: bool, lanthorn_client: Any, lanthorn_config: Any,
                            ct_instance: MakeInstance) -> None:
    uids = _uids()
    first = ct_instance(**uids, ImageComments="first")
    second = ct_instance(**uids, ImageComments="second")
    instance = lanthorn_client.post("/instances", content=first).json()["ID"]
    old_files = _stored_files(lanthorn_config)
    answer = lanthorn_client.post("/instances", content=second).json()
    assert answer["ID"] == instance
    assert answer["Status"] == ("Success" if overwrite else "AlreadyStored")
    kept = second if overwrite else first
    assert lanthorn_client.get(f"/instances/{instance}/file").content == kept
    assert lanthorn_client.get("/statistics").json()["CountInstances"] == 1
    files = _stored_files(lanthorn_config)
    assert len(files) == 1
    assert (files != old_files) is overwrite


def test_zip_upload_reports_each_member(lanthorn_client: Any, ct_instance: MakeInstance,
                                        server_state: State) -> None:
    good = [ct_instance(), ct_instance()]
    broken = ct_instance()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as writer:
        writer.writestr("one.dcm", good[0])
        writer.writestr("folder/", b"")
        writer.writestr("readme.txt", b"Not a DICOM file.\n")
        writer.writestr("broken.dcm", broken)
        writer.writestr("folder/two.dcm", good[1])
    data = bytearray(archive.getvalue())
    start = data.index(b"broken.dcm") + len(b"broken.dcm")
    data[start + 100: start + 160] = bytes(b ^ 0xFF for b in data[start + 100: start + 160])
    response = lanthorn_client.post("/instances", content=bytes(data))
    assert response.status_code == 200
    answer = response.json()
    assert [item["Status"] for item in answer] == ["Success", "Failure", "Failure", "Success"]
    assert [item["Path"] for item in answer if item["Status"] == "Failure"] \
        == ["readme.txt", "broken.dcm"]
    assert all(item["Details"] for item in answer if item["Status"] == "Failure")
    for item, data in zip((answer[0], answer[3]), good, strict=True):
        assert lanthorn_client.get(f"/instances/{item['ID']}/file").content == data
    assert lanthorn_client.get("/statistics").json()["CountInstances"] == 2


def test_a_file_whose_last_bytes_look_like_a_zip_end_record_is_one_instance(
        lanthorn_client: Any) -> None:
    """Pixels may end with what ``zipfile.is_zipfile`` takes for a ZIP's end record (an
    upload of the index-scaling benchmark did, one in 30,000): still one DICOM file."""
    end_record = b"PK\x05\x06" + bytes(8) + (1000).to_bytes(4, "little") * 2 + bytes(2)
    data = make_instance(rows=16, columns=16)
    data = data[:-len(end_record)] + end_record
    assert pydicom.dcmread(io.BytesIO(data)).PixelData.endswith(end_record)
    assert zipfile.is_zipfile(io.BytesIO(data))
    response = lanthorn_client.post("/instances", content=data)
    assert response.status_code == 200, response.text
    assert lanthorn_client.get(f"/instances/{response.json()['ID']}/file").content == data


def test_a_broken_zip_archive_is_refused_with_a_message(lanthorn_client: Any,
                                                        ct_instance: MakeInstance,
                                                        server_state: State) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as writer:
        writer.writestr("one.dcm", ct_instance())
    before = server_state()
    cut = archive.getvalue()[:-30]  # the end record is gone
    response = lanthorn_client.post("/instances", content=cut)
    assert response.status_code == 400
    assert "ZIP archive" in response.json()["Details"]
    assert server_state() == before


def test_metadata_of_an_uploaded_instance(lanthorn_client: Any) -> None:
    data = (TEST_FILES / "CT_small.dcm").read_bytes()
    instance = lanthorn_client.post("/instances", content=data).json()["ID"]
    metadata = lanthorn_client.get(f"/instances/{instance}/metadata?expand").json()
    orthanc = SHAPES["GET /instances/{instance}/metadata?expand"]["body"]
    assert set(metadata) == set(orthanc)
    same = ("Origin", "RemoteIP", "TransferSyntax", "SopClassUid", "IndexInSeries",
            "PixelDataOffset", "RemoteAET", "HttpUsername")
    assert {k: metadata[k] for k in same} == {k: orthanc[k] for k in same}
    assert metadata["Origin"] == "RestApi"
    assert metadata["ReceptionDate"][:8].isdigit() and metadata["ReceptionDate"][8] == "T"
    offset = int(metadata["PixelDataOffset"])
    assert data[offset:offset + 4] == b"\xe0\x7f\x10\x00"  # the (7FE0,0010) tag itself


def test_index_in_series_counts_up(lanthorn_client: Any, ct_instance: MakeInstance) -> None:
    series = {"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid()}
    ids = [lanthorn_client.post("/instances", content=ct_instance(**series)).json()["ID"]
           for _ in range(3)]
    assert [lanthorn_client.get(f"/instances/{i}/metadata/IndexInSeries").text for i in ids] \
        == ["1", "2", "3"]


def test_change_log_order_of_one_upload(lanthorn_client: Any, ct_instance: MakeInstance) -> None:
    answer = lanthorn_client.post("/instances", content=ct_instance()).json()
    changes = lanthorn_client.get("/changes").json()["Changes"]
    assert [(c["ChangeType"], c["ID"]) for c in changes] == [
        ("NewInstance", answer["ID"]), ("NewSeries", answer["ParentSeries"]),
        ("NewStudy", answer["ParentStudy"]), ("NewPatient", answer["ParentPatient"]),
    ]


@pytest.mark.lanthorn_config(StorageCompression=True)
def test_storage_compression(lanthorn_client: Any, lanthorn_config: Any,
                             ct_instance: MakeInstance) -> None:
    data = ct_instance()
    instance = lanthorn_client.post("/instances", content=data).json()["ID"]
    assert lanthorn_client.get(f"/instances/{instance}/file").content == data
    (stored,) = Path(lanthorn_config["StorageDirectory"]).glob("[0-9a-f][0-9a-f]/*/*")
    assert stored.stat().st_size < len(data)
    statistics = lanthorn_client.get("/statistics").json()
    assert int(statistics["TotalDiskSize"]) == stored.stat().st_size
    assert int(statistics["TotalUncompressedSize"]) == len(data)


@pytest.mark.parametrize("compressed", [
    pytest.param(False, id="plain"),
    pytest.param(True, id="zlib", marks=pytest.mark.lanthorn_config(StorageCompression=True))])
@pytest.mark.parametrize("rows", [8, 256], ids=["small", "hashed-beside"])
def test_md5s_of_a_stored_file(lanthorn_client: Any, lanthorn_config: Any, compressed: bool,
                               rows: int) -> None:
    """Small files are hashed in line, large ones (128 KB) on the hashing threads."""
    data = make_instance(rows=rows, columns=rows)
    assert (len(data) >= HASHED_BESIDE_BYTES) == (rows == 256)
    instance = lanthorn_client.post("/instances", content=data).json()["ID"]
    [file] = Path(lanthorn_config["StorageDirectory"]).glob("[0-9a-f][0-9a-f]/*/*")
    url = f"/instances/{instance}/attachments/dicom"
    assert [lanthorn_client.get(f"{url}/{op}").text for op in ("md5", "compressed-md5")] == \
        [hashlib.md5(data).hexdigest(), hashlib.md5(file.read_bytes()).hexdigest()]
    assert (file.read_bytes() == data) == (not compressed)


def test_public_ids_of_a_multi_valued_patient_id(lanthorn_client: Any,
                                                  ct_instance: MakeInstance) -> None:
    """Orthanc hashes the value as DICOM writes it: values joined by backslashes."""
    answer = lanthorn_client.post("/instances", content=ct_instance(PatientID=["A", "B"]))
    digest = hashlib.sha1(b"A\\B").hexdigest()
    assert answer.json()["ParentPatient"] == "-".join(digest[i:i + 8] for i in range(0, 40, 8))



def _stored_while_the_index_is_busy(server: Any, files: list[bytes]
                                    ) -> tuple[list[Any], list[int]]:
    """Store ``files`` from as many threads while the test holds the index's write lock,
    so that all but the first queue behind one another: each thread's result (or the
    exception it raised), and how many instances each committed transaction stored."""
    engine, group = server.index.engine, server.index._ingests
    with closing(engine.raw_connection()) as connection:
        instances = [_instance_count(connection)]  # after each commit
    committed: list[int] = []

    def commit(conn: Any) -> None:  # called just before the commit, in the transaction
        if (now := _instance_count(conn.connection)) != instances[-1]:
            committed.append(now - instances[-1])
            instances.append(now)

    event.listen(engine, "commit", commit)
    try:
        with ThreadPoolExecutor(len(files)) as pool:
            with server.index.write():
                futures = [pool.submit(server.ingest.store, data, Origin()) for data in files]
                deadline = time.monotonic() + 30
                # The group's queue is the only sign that a thread is waiting.
                while len(group._queue) < len(files) - 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
            results = [f.exception() or f.result() for f in futures]
    finally:
        event.remove(engine, "commit", commit)
    return results, committed


def _instance_count(connection: Any) -> int:
    """Instances in the index as a DBAPI connection sees them, without SQLAlchemy (whose
    events these are)."""
    cursor = connection.cursor()
    cursor.execute("SELECT count(*) FROM resources WHERE level = 3")
    return cursor.fetchone()[0]


def _outcome(result: Any) -> str:
    return type(result).__name__ if isinstance(result, Exception) else result.status


def test_concurrent_stores_share_one_commit(lanthorn_server: Any, lanthorn_client: Any,
                                            ct_instance: MakeInstance) -> None:
    series = {"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid()}
    files = [ct_instance(**series) for _ in range(6)]
    results, committed = _stored_while_the_index_is_busy(lanthorn_server, files)
    assert [_outcome(r) for r in results] == ["Success"] * 6
    assert committed == [1, 5]  # the first alone, the five that queued behind it together
    for data, result in zip(files, results, strict=True):
        assert lanthorn_client.get(f"/instances/{result.public_ids[3]}/file").content == data
    indexes = {lanthorn_client.get(f"/instances/{r.public_ids[3]}/metadata/IndexInSeries").text
               for r in results}
    assert indexes == {str(n) for n in range(1, 7)}
    changes = lanthorn_client.get("/changes?limit=100").json()["Changes"]
    assert sum(c["ChangeType"] == "NewInstance" for c in changes) == 6


def test_ingests_keep_one_connection_and_replace_it_after_an_error(lanthorn_server: Any) -> None:
    """The group commit's batches write on one kept connection, not one from the pool
    each; a batch that failed closes it, and the next batch opens another."""
    index, this_thread = lanthorn_server.index, threading.get_ident()
    writers: list[Any] = []  # the connection of each write transaction this thread began

    def began(conn: Any) -> None:
        if conn.get_execution_options().get("lanthorn_write") \
                and threading.get_ident() == this_thread:
            writers.append(conn)

    def store(number: int, uuid: str) -> bool:
        ids = public_ids((f"P{number}", f"1.2.{number}", f"1.2.{number}.1", f"1.2.{number}.1.1"))
        attachment = Attachment(1, uuid, 0, 0, 0, "", "")
        return index.store_instance(NewInstance(ids, {}, {}, attachment, b"", time.time()),
                                    overwrite=False).stored

    event.listen(index.engine, "begin", began)
    try:
        assert [store(n, f"file-{n}") for n in range(3)] == [True] * 3
        with pytest.raises(index.engine.dialect.dbapi.IntegrityError):  # two rows, one file
            store(3, "file-0")
        assert store(4, "file-4")
    finally:
        event.remove(index.engine, "begin", began)
    first, *others, replacement = writers
    assert len(others) == 3 and all(conn is first for conn in others)
    assert replacement is not first and first.closed


@pytest.mark.lanthorn_config(MaximumPatientCount=2, MaximumStorageMode="Reject")
def test_a_refused_store_in_a_group_fails_alone(lanthorn_server: Any, lanthorn_client: Any,
                                                ct_instance: MakeInstance) -> None:
    first = ct_instance(PatientID="P1")
    assert lanthorn_client.post("/instances", content=first).status_code == 200
    files = [ct_instance(PatientID="P2"), ct_instance(PatientID="P3"),
             ct_instance(PatientID="P1"), first]
    results, _ = _stored_while_the_index_is_busy(lanthorn_server, files)
    assert sorted(_outcome(r) for r in results) \
        == ["AlreadyStored", "StorageFull", "Success", "Success"]
    assert _outcome(results[2]) == "Success"
    assert lanthorn_client.get("/statistics").json()["CountInstances"] == 3
    assert len(_stored_files(lanthorn_server.config)) == 3
