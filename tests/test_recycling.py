"""Disk recycling: ``MaximumPatientCount`` / ``MaximumStorageSize`` with
``MaximumStorageMode`` "Recycle" (the least recently updated unprotected patient goes,
never the one being stored to) or "Reject" (507, C-STORE status 0xA700), through REST
and C-STORE, and ``/patients/{id}/protected``."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pydicom
import pytest
from dimse_peers import listening, scu
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from starlette.testclient import TestClient

import lanthorn
from lanthorn.config import ConfigError
from lanthorn.ingest import DICOM_ATTACHMENT
from lanthorn.model import Level
from lanthorn.testing import make_instance


def upload(client: TestClient, patient: str, size: int = 8) -> dict:
    """POST one instance of ``patient`` (``size`` x ``size`` 16-bit pixels)."""
    reply = client.post("/instances", content=make_instance(PatientID=patient, rows=size,
                                                            columns=size))
    return {"status": reply.status_code, **reply.json()}


def patients(client: TestClient) -> list[str]:
    return sorted(p["MainDicomTags"]["PatientID"] for p in
                  client.get("/patients?expand").json())


def files_match_index(server: lanthorn.Server) -> bool:
    """Every stored file belongs to an instance, and every instance has its file."""
    instances = [i for i, _ in server.index.list_resources(Level.INSTANCE)]
    indexed = {a.uuid for a in server.index.attachments_of(instances, DICOM_ATTACHMENT).values()}
    return indexed == {uuid for uuid, _ in server.storage.scan()}


@pytest.mark.lanthorn_config(MaximumPatientCount=2)
def test_the_least_recently_updated_patient_is_recycled(
        lanthorn_server: lanthorn.Server, lanthorn_client: TestClient) -> None:
    first = upload(lanthorn_client, "P1")["ParentPatient"]
    upload(lanthorn_client, "P2")
    upload(lanthorn_client, "P3")
    assert patients(lanthorn_client) == ["P2", "P3"]
    assert {(c["ChangeType"], c["ID"]) for c in lanthorn_client.get("/changes?limit=100")
            .json()["Changes"]} >= {("Deleted", first)}
    upload(lanthorn_client, "P2")  # P2 is now more recent than P3
    upload(lanthorn_client, "P4")
    assert patients(lanthorn_client) == ["P2", "P4"]
    assert len(lanthorn_client.get("/instances").json()) == 3
    assert files_match_index(lanthorn_server)


@pytest.mark.lanthorn_config(MaximumPatientCount=2)
def test_protected_patients_are_not_recycled(lanthorn_client: TestClient) -> None:
    oldest = upload(lanthorn_client, "P1")["ParentPatient"]
    upload(lanthorn_client, "P2")
    path = f"/patients/{oldest}/protected"
    assert lanthorn_client.get(path).text == "0"
    for body, expected in (("1", "1"), ("false", "0"), ("true", "1")):
        assert lanthorn_client.put(path, content=body).status_code == 200
        assert lanthorn_client.get(path).text == expected
    bad = lanthorn_client.put(path, content="yes")
    assert (bad.status_code, bad.json()["Details"]) == (400, "Boolean value expected")
    upload(lanthorn_client, "P3")
    assert patients(lanthorn_client) == ["P1", "P3"]
    second = lanthorn_client.post("/tools/lookup", content="P3").json()[0]["ID"]
    assert lanthorn_client.put(f"/patients/{second}/protected", content="1").status_code == 200
    full = upload(lanthorn_client, "P4")
    assert full["status"] == 507 and "no unprotected patient" in full["Details"]
    assert patients(lanthorn_client) == ["P1", "P3"]
    assert lanthorn_client.put("/patients/nobody/protected", content="1").status_code == 404


@pytest.mark.lanthorn_config(MaximumStorageSize=1)
def test_the_patient_being_stored_to_is_never_recycled(
        lanthorn_server: lanthorn.Server, lanthorn_client: TestClient) -> None:
    big = 400  # 400 x 400 x 2 bytes: about 0.3 MB per instance
    for _ in range(3):
        assert upload(lanthorn_client, "P1", big)["status"] == 200
    full = upload(lanthorn_client, "P1", big)
    assert full["status"] == 507, full
    assert (full["OrthancStatus"], full["OrthancError"]) == (19, "The file storage is full")
    assert len(lanthorn_client.get("/instances").json()) == 3
    assert upload(lanthorn_client, "P2", big)["status"] == 200  # P1 goes as a whole
    assert patients(lanthorn_client) == ["P2"]
    assert files_match_index(lanthorn_server)


@pytest.mark.lanthorn_config(MaximumPatientCount=1, MaximumStorageMode="Reject")
def test_reject_mode_refuses_new_patients_and_loses_nothing(
        lanthorn_server: lanthorn.Server, lanthorn_client: TestClient) -> None:
    assert upload(lanthorn_client, "P1")["status"] == 200
    assert upload(lanthorn_client, "P1")["status"] == 200  # a known patient still fits
    refused = upload(lanthorn_client, "P2")
    assert refused["status"] == 507
    assert refused["Details"] == "the maximum patients is reached (MaximumStorageMode is Reject)"
    assert patients(lanthorn_client) == ["P1"]
    assert len(lanthorn_client.get("/instances").json()) == 2
    assert files_match_index(lanthorn_server)


@pytest.fixture
def port(lanthorn_server: lanthorn.Server) -> Iterator[int]:
    with listening(lanthorn_server):
        yield lanthorn_server.config["DicomPort"]


@pytest.mark.parametrize("mode", [
    pytest.param(mode, marks=pytest.mark.lanthorn_config(
        MaximumPatientCount=1, MaximumStorageMode=mode, DicomBindAddress="127.0.0.1"))
    for mode in ("Recycle", "Reject")])
def test_c_store_recycles_or_answers_out_of_resources(
        lanthorn_server: lanthorn.Server, port: int, mode: str) -> None:
    server = lanthorn_server
    with scu(port, CTImageStorage) as association:
        statuses = [association.send_c_store(pydicom.dcmread(io.BytesIO(
            make_instance(PatientID=patient)))) for patient in ("P1", "P2")]
    assert statuses[0].Status == 0x0000
    ids = server.index.list_resources(Level.PATIENT)
    if mode == "Recycle":
        assert statuses[1].Status == 0x0000 and len(ids) == 1
        assert server.index.main_tags_of(ids[0][0])[0x00100020] == "P2"
    else:
        assert statuses[1].Status == 0xA700
        assert "MaximumStorageMode is Reject" in statuses[1].ErrorComment
        assert server.index.main_tags_of(ids[0][0])[0x00100020] == "P1"
    assert files_match_index(server)


def test_an_unknown_storage_mode_stops_start_up(lanthorn_config: lanthorn.Config) -> None:
    with pytest.raises(ConfigError, match="MaximumStorageMode"):
        lanthorn.Server(lanthorn_config.with_overrides(MaximumStorageMode="Delete"),
                        load_entry_points=False)
