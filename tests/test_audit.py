"""The audit log: every kind of action over REST and DICOM (real pynetdicom peers), read
back through the admin-only route, on each index backend."""

from __future__ import annotations

import base64
import io
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dimse_peers import PEER_AET, SCU_AET, StoreSCP, listening, scu
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import JPEGLSLossless
from pynetdicom import build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from starlette.testclient import TestClient

from lanthorn import Origin
from lanthorn.auth import ROLES, hash_password
from lanthorn.config import Config
from lanthorn.index.audit import AuditEntry, AuditFilter
from lanthorn.server import Server
from lanthorn.testing import make_instance

pytestmark = pytest.mark.all_index_backends

PASSWORD = "correct horse"
CLIENT_IP = "127.0.0.1"


def basic(user: str, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    return {role: hash_password(PASSWORD) for role in ROLES}


@pytest.fixture
def peer() -> StoreSCP:
    return StoreSCP()


@pytest.fixture
def lanthorn_config(lanthorn_config: Config, hashes: dict[str, str], peer: StoreSCP) -> Config:
    """One user per role (named after it), and modalities for the DICOM tests."""
    users = {role: {"Password": hashes[role], "Roles": [role]} for role in ROLES}
    return lanthorn_config.with_overrides(
        AuthenticationEnabled=True, RegisteredUsers=users, DicomBindAddress="127.0.0.1",
        DicomModalities={"scu": [SCU_AET, "127.0.0.1", 104],
                         "peer": {"AET": PEER_AET, "Host": "127.0.0.1", "Port": peer.port}})


@pytest.fixture
def client(lanthorn_server: Server) -> Iterator[TestClient]:
    with TestClient(lanthorn_server.app, client=(CLIENT_IP, 50000)) as http:
        yield http


def audit(client: TestClient, **filters: Any) -> list[dict[str, Any]]:
    answer = client.get("/tools/audit-log", params=filters, headers=basic("admin"))
    assert answer.status_code == 200, answer.text
    return answer.json()


def upload(client: TestClient, **tags: Any) -> dict[str, str]:
    answer = client.post("/instances", content=make_instance(**tags), headers=basic("uploader"))
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_each_rest_action_is_recorded(client: TestClient) -> None:
    stored = upload(client, PatientID="P1", PatientName="DOE^JANE")
    instance, study = stored["ID"], stored["ParentStudy"]
    viewer, editor, admin = basic("viewer"), basic("editor"), basic("admin")
    assert client.get(f"/instances/{instance}", headers=viewer).status_code == 200
    assert client.get(f"/instances/{instance}/file", headers=viewer).status_code == 200
    assert client.get(f"/studies/{study}/archive", headers=viewer).status_code == 200
    assert client.post("/tools/find", json={"Level": "Study", "Query": {"PatientID": "P1"}},
                       headers=viewer).status_code == 200
    assert client.post(f"/studies/{study}/modify", json={"Replace": {"StudyDescription": "x"}},
                       headers=editor).status_code == 200
    assert client.post(f"/studies/{study}/anonymize", json={}, headers=editor).status_code == 200
    assert client.put("/tools/log-level", content="verbose", headers=admin).status_code == 200
    assert client.post("/tools/pseudonyms", json={"PatientID": "P1"},
                       headers=admin).status_code == 200
    assert client.delete(f"/studies/{study}", headers=viewer).status_code == 403
    assert client.get(f"/studies/{study}").status_code == 401
    assert client.delete(f"/studies/{study}", headers=editor).status_code == 200
    assert client.get("/system", headers=viewer).status_code == 200  # quiet: not recorded

    entries = audit(client)
    seen = [(e["Who"], e["Action"], e["Level"], e["Resource"], e["Status"])
            for e in reversed(entries)]
    assert seen == [
        ("uploader", "store", "Instance", instance, 200),
        ("viewer", "read", "Instance", instance, 200),
        ("viewer", "download", "Instance", instance, 200),
        ("viewer", "download", "Study", study, 200),
        ("viewer", "query", None, None, 200),
        ("editor", "modify", "Study", study, 200),
        ("editor", "anonymize", "Study", study, 200),
        ("admin", "admin", None, None, 200),
        ("admin", "pseudonyms", None, None, 200),
        ("viewer", "delete", "Study", study, 403),
        (None, "read", "Study", study, 401),
        ("editor", "delete", "Study", study, 200),
    ]
    assert {(e["Via"], e["RemoteIp"]) for e in entries} == {("basic", CLIENT_IP),
                                                          ("none", CLIENT_IP)}
    by_action = {e["Action"]: e for e in entries}
    assert by_action["query"]["Details"]["Body"]["Query"] == {"PatientID": "P1"}
    assert by_action["pseudonyms"]["Details"] == {
        "Method": "POST", "Uri": "/tools/pseudonyms", "Body": {"PatientID": "P1"}}
    assert by_action["admin"]["Details"]["Uri"] == "/tools/log-level"
    assert entries[0]["Time"].endswith("Z") and entries[0]["Seq"] > entries[1]["Seq"]


def test_filters(client: TestClient, lanthorn_server: Server) -> None:
    old = AuditEntry(time.time() - 7200, "alice", "basic", "10.0.0.1", "read", "Study", "s1",
                     200)
    lanthorn_server.index.audit.add([old])
    instance = upload(client)["ID"]
    client.get(f"/instances/{instance}", headers=basic("viewer"))
    client.get(f"/instances/{instance}/tags", headers=basic("editor"))
    assert [e["Who"] for e in audit(client, user="editor")] == ["editor"]
    assert [e["Who"] for e in audit(client, resource=instance)] == ["editor", "viewer",
                                                                   "uploader"]
    assert [e["Who"] for e in audit(client, action="store")] == ["uploader"]
    hour_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    assert [e["Who"] for e in audit(client, until=hour_ago)] == ["alice"]
    assert "alice" not in [e["Who"] for e in audit(client, since=hour_ago)]
    assert len(audit(client, limit=2)) == 2
    for bad in ({"limit": "0"}, {"limit": "x"}, {"since": "yesterday"}, {"who": "alice"}):
        answer = client.get("/tools/audit-log", params=bad, headers=basic("admin"))
        assert answer.status_code == 400, bad


def test_only_an_admin_reads_it(client: TestClient) -> None:
    assert client.get("/tools/audit-log").status_code == 401
    assert client.get("/tools/audit-log", headers=basic("admin", "wrong")).status_code == 401
    for role in ("editor", "uploader", "viewer"):
        assert client.get("/tools/audit-log", headers=basic(role)).status_code == 403, role
    assert client.get("/tools/audit-log", headers=basic("admin")).status_code == 200


def test_expired_entries_are_purged_by_the_lease_holder(lanthorn_server: Server,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lanthorn.audit.PURGE_SECONDS", 0.0)  # not just once an hour
    days = lanthorn_server.config["AuditLogRetentionDays"]
    now = time.time()
    lanthorn_server.index.audit.add([
        AuditEntry(now - (days + 1) * 86400, "old", "basic", "", "read"),
        AuditEntry(now - (days - 1) * 86400, "recent", "basic", "", "read")])
    assert lanthorn_server.events is not None
    lanthorn_server.events.run_once()
    assert [e.who for e in lanthorn_server.index.audit.search(AuditFilter())] == ["recent"]


@pytest.mark.lanthorn_config(AuditLogEnabled=False)
def test_disabled(client: TestClient) -> None:
    upload(client)
    assert audit(client) == []


# -- DICOM --------------------------------------------------------------------------------


def study_identifier(uid: str) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = uid
    return identifier


def test_each_dicom_action_is_recorded(lanthorn_server: Server, client: TestClient,
                                       peer: StoreSCP) -> None:
    dataset = pydicom.dcmread(io.BytesIO(make_instance(PatientID="P1")))
    port = lanthorn_server.config["DicomPort"]
    find_model = StudyRootQueryRetrieveInformationModelFind
    move_model = StudyRootQueryRetrieveInformationModelMove
    get_model = StudyRootQueryRetrieveInformationModelGet
    with listening(lanthorn_server), peer.running():
        with scu(port, CTImageStorage) as assoc:
            assert assoc.send_c_store(dataset).Status == 0x0000
        with scu(port, find_model) as assoc:
            answers = list(assoc.send_c_find(study_identifier(dataset.StudyInstanceUID),
                                             find_model))
            assert [s.Status for s, _ in answers] == [0xFF00, 0x0000]
        with scu(port, move_model) as assoc:
            statuses = [s.Status for s, _ in assoc.send_c_move(
                study_identifier(dataset.StudyInstanceUID), PEER_AET, move_model)]
            assert statuses[-1] == 0x0000
            statuses = [s.Status for s, _ in assoc.send_c_move(
                study_identifier(dataset.StudyInstanceUID), "NOWHERE", move_model)]
            assert statuses == [0xA801]
        with scu(port, get_model, CTImageStorage,
                 ext_neg=[build_role(CTImageStorage, scp_role=True)],
                 evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)]) as assoc:
            assert [s.Status for s, _ in assoc.send_c_get(
                study_identifier(dataset.StudyInstanceUID), get_model)] == [0xFF00, 0x0000]
            assert [s.Status for s, _ in assoc.send_c_get(
                study_identifier(""), get_model)] == [0xC413]  # no unique key: refused
    entries = list(reversed(audit(client)))
    instance = next(e for e in entries if e["Action"] == "store")["Resource"]
    assert [(e["Who"], e["Via"], e["RemoteIp"], e["Action"], e["Status"])
            for e in entries if e["Via"] == "dicom"] == [
        (SCU_AET, "dicom", "127.0.0.1", "store", 0x0000),
        (SCU_AET, "dicom", "127.0.0.1", "query", 0x0000),
        (SCU_AET, "dicom", "127.0.0.1", "move", 0x0000),
        (SCU_AET, "dicom", "127.0.0.1", "move", 0xA801),
        (SCU_AET, "dicom", "127.0.0.1", "get", 0x0000),
        (SCU_AET, "dicom", "127.0.0.1", "get", 0xC413)]
    assert client.get("/instances", headers=basic("admin")).json() == [instance]
    query, move = (next(e for e in entries if e["Action"] == a) for a in ("query", "move"))
    assert query["Details"]["Query"] == {"QueryRetrieveLevel": "STUDY",
                                         "StudyInstanceUID": dataset.StudyInstanceUID}
    assert query["Details"]["CalledAet"] == "LANTHORN"
    assert move["Details"]["Query"]["MoveDestination"] == PEER_AET
    assert move["Details"]["SubOperations"] == 1
    assert len(peer.received) == 1


# -- DeidentifyLogs ---------------------------------------------------------------------


@pytest.mark.parametrize("deidentify", [True, False])
def test_deidentify_logs_hides_identifying_values(
        lanthorn_config: Config, lanthorn_make_server: Any, deidentify: bool,
        caplog: pytest.LogCaptureFixture) -> None:
    """An instance that cannot be transcoded on ingest is logged, by UID only when allowed."""
    report = Path(get_testdata_file("test-SR.dcm")).read_bytes()
    uid = pydicom.dcmread(io.BytesIO(report)).SOPInstanceUID
    server = lanthorn_make_server(lanthorn_config.with_overrides(
        IngestTranscoding=str(JPEGLSLossless), DeidentifyLogs=deidentify))
    try:
        with caplog.at_level(logging.WARNING, "lanthorn.ingest"):
            server.ingest.store(report, Origin())
    finally:
        server.close()
    assert "is stored as received" in caplog.text
    assert (uid in caplog.text) is not deidentify
    assert ("<hidden>" in caplog.text) is deidentify
