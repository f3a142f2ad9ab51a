"""Query/retrieve of remote modalities over REST (``/modalities/{id}/query|move|find-*``,
``/queries/*``): against a second Lanthorn server process and against Orthanc, over real
DICOM associations, with the C-MOVEd instances arriving at our own listener."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from dimse_peers import listening
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]
from starlette.testclient import TestClient

import lanthorn
from lanthorn.config import Config
from lanthorn.testing import ServerProcess, free_port, make_instance, require_tool

pytestmark = pytest.mark.all_index_backends

REMOTE_AET = "REMOTE"


def wait_until(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def remote_ports() -> tuple[int, int]:
    """The HTTP and DICOM ports of the second Lanthorn."""
    return free_port(), free_port()


@pytest.fixture
def other_ports() -> tuple[int, int]:
    """The HTTP and DICOM ports of the other SCPs (Orthanc, a worklist SCP)."""
    return free_port(), free_port()


@pytest.fixture
def lanthorn_config(lanthorn_config: Config, remote_ports: tuple[int, int],
                    other_ports: tuple[int, int]) -> Config:
    return lanthorn_config.with_overrides(DicomModalities={
        "remote": [REMOTE_AET, "127.0.0.1", remote_ports[1]],
        "other": [REMOTE_AET, "127.0.0.1", other_ports[1]],
        "down": ["DOWN", "127.0.0.1", free_port()],
    }, DicomBindAddress="127.0.0.1")


@pytest.fixture(scope="module")
def filled_remote(tmp_path_factory: pytest.TempPathFactory, remote_ports: tuple[int, int]
                  ) -> Iterator[httpx2.Client]:
    """A second Lanthorn, our query/retrieve SCP, holding what ``fill`` stores. The
    tests only read it, so it is started and filled once."""
    folder = tmp_path_factory.mktemp("remote")
    http_port, dicom_port = remote_ports
    config = folder / "remote.json"
    config.write_text(json.dumps({
        "DicomAet": REMOTE_AET, "HttpPort": http_port, "DicomPort": dicom_port,
        "StorageDirectory": str(folder / "storage"), "HttpBindAddress": "127.0.0.1",
        "DicomBindAddress": "127.0.0.1"}))
    process = ServerProcess(config, http_port, dicom_port, folder / "remote.log").start()
    try:
        with httpx2.Client(base_url=process.url, timeout=30) as client:
            fill(client)
            yield client
    finally:
        process.kill_group()


@pytest.fixture
def remote(filled_remote: httpx2.Client, lanthorn_config: Config) -> httpx2.Client:
    """The second Lanthorn, knowing this test's server as a move destination."""
    us = ["LANTHORN", "127.0.0.1", lanthorn_config["DicomPort"]]
    assert filled_remote.put("/modalities/us", json=us).status_code == 200
    return filled_remote


@pytest.fixture
def client(lanthorn_server: lanthorn.Server, lanthorn_client: TestClient
           ) -> Iterator[TestClient]:
    with listening(lanthorn_server):
        yield lanthorn_client


def fill(remote: httpx2.Client) -> list[str]:
    """Two studies of patient P1 (two series in the first) and one of P2; study UIDs."""
    layout = [("P1", "1.2.1", "1.2.1.1"), ("P1", "1.2.1", "1.2.1.2"), ("P1", "1.2.2", "1.2.2.1"),
              ("P2", "1.2.3", "1.2.3.1")]
    for patient, study, series in layout:
        data = make_instance(PatientID=patient, PatientName=f"DOE^{patient}",
                             StudyInstanceUID=study, SeriesInstanceUID=series,
                             StudyDescription=f"study {study}")
        assert remote.post("/instances", content=data).status_code == 200
    return ["1.2.1", "1.2.2", "1.2.3"]


def study_query(client: TestClient, *, modality: str = "remote", **query: str) -> str:
    answer = client.post(f"/modalities/{modality}/query",
                         json={"Level": "Study", "Query": query})
    assert answer.status_code == 200, answer.text
    query_id = answer.json()["ID"]
    assert answer.json() == {"ID": query_id, "Path": f"/queries/{query_id}"}
    return query_id


def test_a_study_query_and_its_answers_in_orthanc_shapes(client: TestClient,
                                                         remote: httpx2.Client) -> None:
    query_id = study_query(client, PatientID="P1", StudyDescription="")
    assert client.get("/queries").json() == [query_id]
    assert client.get(f"/queries/{query_id}").json() == \
        ["answers", "level", "modality", "query", "retrieve"]
    assert client.get(f"/queries/{query_id}/answers").json() == ["0", "1"]
    simplified = client.get(f"/queries/{query_id}/answers?expand&simplify").json()
    assert sorted(a["StudyInstanceUID"] for a in simplified) == ["1.2.1", "1.2.2"]
    first = simplified[0]
    assert (first["QueryRetrieveLevel"], first["PatientID"], first["AccessionNumber"]) == \
        ("STUDY", "P1", "")  # the level's keys are asked for, as Orthanc does
    assert first["StudyDescription"] == f"study {first['StudyInstanceUID']}"
    full = client.get(f"/queries/{query_id}/answers/0/content").json()
    assert full["0010,0020"] == {"Name": "PatientID", "Type": "String", "Value": "P1"}
    assert client.get(f"/queries/{query_id}/answers/0/content?short").json()["0010,0020"] == "P1"
    assert client.get(f"/queries/{query_id}/answers/1").json() == \
        ["content", "retrieve", "query-series", "query-instances"]
    assert client.get(f"/queries/{query_id}/level").text == "Study"
    assert client.get(f"/queries/{query_id}/modality").text == "remote"
    assert client.get(f"/queries/{query_id}/query?simplify").json() == \
        {"PatientID": "P1", "StudyDescription": ""}
    assert client.get(f"/queries/{query_id}/answers/2/content").status_code == 400
    assert client.delete(f"/queries/{query_id}").status_code == 200
    assert client.get(f"/queries/{query_id}").status_code == 404


def test_retrieve_one_answer_then_query_its_series_and_retrieve_them_as_a_job(
        client: TestClient, remote: httpx2.Client) -> None:
    query_id = study_query(client, StudyInstanceUID="1.2.1")
    moved = client.post(f"/queries/{query_id}/answers/0/retrieve", content="LANTHORN")
    assert moved.status_code == 200, moved.text
    assert moved.json() == {"Description": "REST API", "LocalAet": "LANTHORN", "Query": [{
        "0008,0050": "", "0008,0052": "STUDY", "0020,000d": "1.2.1"}], "RemoteAet": REMOTE_AET}
    assert len(client.get("/instances").json()) == 2  # both series of the study
    for instance in client.get("/instances").json():
        client.delete(f"/instances/{instance}")

    series = client.post(f"/queries/{query_id}/answers/0/query-series", json={})
    series_query = series.json()["ID"]
    answers = client.get(f"/queries/{series_query}/answers?expand&simplify").json()
    assert sorted(a["SeriesInstanceUID"] for a in answers) == ["1.2.1.1", "1.2.1.2"]
    assert {a["StudyInstanceUID"] for a in answers} == {"1.2.1"}
    job = client.post(f"/queries/{series_query}/retrieve", json={"Asynchronous": True}).json()
    wait_until(lambda: client.get(f"/jobs/{job['ID']}").json()["State"] == "Success")
    described = client.get(f"/jobs/{job['ID']}").json()
    assert described["Type"] == "DicomMoveScu"
    assert [q["0020,000e"] for q in described["Content"]["Query"]] == \
        [a["SeriesInstanceUID"] for a in answers]
    assert len(client.get("/instances").json()) == 2


def test_move_resources_and_the_deprecated_finds(client: TestClient,
                                                  remote: httpx2.Client) -> None:
    moved = client.post("/modalities/remote/move", json={
        "Level": "Study", "Resources": [{"StudyInstanceUID": "1.2.3"}],
        "TargetAet": "LANTHORN"})
    assert (moved.status_code, moved.json()) == (200, {})
    [patient] = client.get("/patients?expand").json()
    assert patient["MainDicomTags"]["PatientID"] == "P2"
    patients = client.post("/modalities/remote/find-patient", json={"PatientName": "DOE*"})
    assert sorted(p["PatientID"] for p in patients.json()) == ["P1", "P2"]
    instances = client.post("/modalities/remote/find-instance",
                            json={"StudyInstanceUID": "1.2.1", "SeriesInstanceUID": "1.2.1.2"})
    assert len(instances.json()) == 1, instances.json()['Details']


def test_a_permissive_move_skips_what_the_modality_fails(client: TestClient,
                                                         remote: httpx2.Client) -> None:
    """The remote does not know the destination "NOWHERE" (0xA801): the first move fails
    the request, unless ``Permissive``, which goes on to the next one."""
    resources = [{"StudyInstanceUID": "1.2.3"}, {"StudyInstanceUID": "1.2.1"}]
    strict = client.post("/modalities/remote/move", json={
        "Level": "Study", "Resources": resources, "TargetAet": "NOWHERE"})
    assert strict.status_code == 500 and "0xA801" in strict.json()["Details"]
    job = client.post("/modalities/remote/move", json={
        "Level": "Study", "Resources": resources, "TargetAet": "NOWHERE",
        "Permissive": True, "Synchronous": False}).json()
    wait_until(lambda: client.get(f"/jobs/{job['ID']}").json()["State"] == "Success")
    assert client.get(f"/jobs/{job['ID']}").json()["Progress"] == 100


def test_echo_checks_find_against_a_modality_that_answers(client: TestClient,
                                                         remote: httpx2.Client) -> None:
    assert client.post("/modalities/remote/echo", json={"CheckFind": True}).json() == {}


@pytest.mark.lanthorn_config(QueryRetrieveSize=2)
def test_only_the_most_recent_queries_are_kept(client: TestClient,
                                               remote: httpx2.Client) -> None:
    queries = [study_query(client, PatientID=f"P{n}") for n in range(3)]
    assert client.get("/queries").json() == queries[1:]


def test_bad_query_requests(client: TestClient) -> None:
    for body, words in (({"Level": "Bogus"}, "Level"), ({"Level": "Study", "Query": []}, "Query"),
                        ({"Level": "Study", "Query": {"NoSuchTag": "x"}}, "NoSuchTag"),
                        ({"Level": "Study", "Query": {"PatientID": 3}}, "PatientID"),
                        ({"Level": "Study", "Timeout": "soon"}, "Timeout")):
        answer = client.post("/modalities/remote/query", json=body)
        assert answer.status_code == 400 and words in answer.json()["Details"], body
    assert client.post("/modalities/nowhere/query", json={"Level": "Study"}).status_code == 404
    down = client.post("/modalities/down/query", json={"Level": "Study", "Query": {}})
    assert (down.status_code, down.json()["OrthancStatus"]) == (500, 9)
    assert client.post("/modalities/remote/move", json={"Level": "Study"}).status_code == 400
    assert client.get("/queries/nope/answers").status_code == 404


@pytest.fixture
def orthanc(tmp_path: Path, lanthorn_config: Config, other_ports: tuple[int, int]
            ) -> Iterator[httpx2.Client]:
    """Orthanc as the query/retrieve SCP, on the "other" modality's port."""
    binary = require_tool("Orthanc", "orthanc")
    http_port, dicom_port = other_ports
    config = tmp_path / "orthanc.json"
    config.write_text(json.dumps({
        "Name": "reference", "DicomAet": REMOTE_AET, "HttpPort": http_port,
        "DicomPort": dicom_port, "StorageDirectory": str(tmp_path / "orthanc"),
        "RemoteAccessAllowed": True, "AuthenticationEnabled": False, "Plugins": [],
        "DicomModalities": {"us": ["LANTHORN", "127.0.0.1", lanthorn_config["DicomPort"]]}}))
    process = subprocess.Popen([binary, str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        with httpx2.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30) as client:
            wait_until(lambda: _answers(client))
            yield client
    finally:
        process.kill()
        process.wait(30)


def _answers(client: httpx2.Client) -> bool:
    try:
        return client.get("/system").status_code == 200
    except httpx2.HTTPError:
        return False


def test_query_and_retrieve_from_orthanc(client: TestClient, orthanc: httpx2.Client) -> None:
    fill(orthanc)
    query_id = study_query(client, modality="other", PatientName="DOE^P1",
                           ModalitiesInStudy="")
    answers = client.get(f"/queries/{query_id}/answers?expand&simplify").json()
    assert sorted(a["StudyInstanceUID"] for a in answers) == ["1.2.1", "1.2.2"]
    assert {a["ModalitiesInStudy"] for a in answers} == {"CT"}
    job = client.post(f"/queries/{query_id}/retrieve",
                      json={"TargetAet": "LANTHORN", "Synchronous": False}).json()
    wait_until(lambda: client.get(f"/jobs/{job['ID']}").json()["State"] == "Success")
    assert len(client.get("/instances").json()) == 3


def test_find_worklist_asks_a_worklist_scp(client: TestClient,
                                           other_ports: tuple[int, int]) -> None:
    """A pynetdicom Modality Worklist SCP on the "other" modality's port."""
    seen: list[Dataset] = []

    def on_find(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        seen.append(event.identifier)
        item = Dataset()
        item.PatientName, item.PatientID, item.AccessionNumber = "DOE^WL", "W1", "A7"
        yield 0xFF00, item

    ae = AE(REMOTE_AET)
    ae.add_supported_context(ModalityWorklistInformationFind)
    server = ae.start_server(("127.0.0.1", other_ports[1]), block=False,
                             evt_handlers=[(evt.EVT_C_FIND, on_find)])
    try:
        answer = client.post("/modalities/other/find-worklist",
                             json={"Query": {"PatientID": "W*", "AccessionNumber": ""}})
        short = client.post("/modalities/other/find-worklist",
                            json={"Query": {"PatientID": "W*"}, "Short": True})
    finally:
        server.shutdown()
    assert answer.json() == [{"AccessionNumber": "A7", "PatientID": "W1",
                              "PatientName": "DOE^WL"}]
    assert short.json()[0]["0010,0020"] == "W1"
    assert (seen[0].PatientID, seen[0].AccessionNumber) == ("W*", "")


def test_deprecated_finds_at_every_level(client: TestClient, remote: httpx2.Client) -> None:
    studies = client.post("/modalities/remote/find-study", json={"PatientID": "P1"}).json()
    assert sorted(s["StudyInstanceUID"] for s in studies) == ["1.2.1", "1.2.2"]
    series = client.post("/modalities/remote/find-series",
                         json={"StudyInstanceUID": "1.2.1", "Modality": ""}).json()
    assert sorted(s["SeriesInstanceUID"] for s in series) == ["1.2.1.1", "1.2.1.2"]
    assert {s["Modality"] for s in series} == {"CT"}


def test_child_queries_of_a_patient(client: TestClient, remote: httpx2.Client) -> None:
    patients = client.post("/modalities/remote/query",
                           json={"Level": "Patient", "Query": {"PatientID": "P1"}}).json()["ID"]
    assert client.get(f"/queries/{patients}/answers/0").json() == \
        ["content", "retrieve", "query-studies", "query-series", "query-instances"]
    studies = client.post(f"/queries/{patients}/answers/0/query-studies", json={}).json()["ID"]
    assert len(client.get(f"/queries/{studies}/answers").json()) == 2
    instances = client.post(f"/queries/{patients}/answers/0/query-instances",
                            json={"Query": {"SeriesInstanceUID": "1.2.2.1"}}).json()["ID"]
    [instance] = client.get(f"/queries/{instances}/answers?expand&simplify").json()
    assert (instance["PatientID"], instance["QueryRetrieveLevel"]) == ("P1", "IMAGE")
    series = client.post(f"/queries/{studies}/answers/0/query-series", json={}).json()["ID"]
    assert client.post(f"/queries/{series}/answers/0/query-studies",
                       json={}).status_code == 400  # a series has no child studies


def test_retrieve_by_c_get(client: TestClient, remote: httpx2.Client) -> None:
    """The instances come back over our own association: no move destination needed."""
    got = client.post("/modalities/remote/get", json={
        "Level": "Series", "Resources": [{"StudyInstanceUID": "1.2.1",
                                          "SeriesInstanceUID": "1.2.1.2"}]})
    assert got.status_code == 200, got.text
    assert got.json()["Query"] == [{"0008,0052": "SERIES", "0020,000d": "1.2.1",
                                    "0020,000e": "1.2.1.2"}]
    [instance] = client.get("/instances").json()
    metadata = client.get(f"/instances/{instance}/metadata?expand").json()
    assert (metadata["Origin"], metadata["RemoteAET"], metadata["CalledAET"]) == \
        ("DicomProtocol", REMOTE_AET, "LANTHORN")
    query_id = study_query(client, StudyInstanceUID="1.2.2")
    job = client.post(f"/queries/{query_id}/retrieve",
                      json={"RetrieveMethod": "C-GET", "Asynchronous": True}).json()
    wait_until(lambda: client.get(f"/jobs/{job['ID']}").json()["State"] == "Success")
    assert client.get(f"/jobs/{job['ID']}").json()["Type"] == "DicomGetScu"
    assert len(client.get("/instances").json()) == 2
    bad = client.post(f"/queries/{query_id}/retrieve", json={"RetrieveMethod": "C-FTP"})
    assert bad.status_code == 400


def test_the_deprecated_hierarchical_find(client: TestClient, remote: httpx2.Client) -> None:
    [patient] = client.post("/modalities/remote/find", json={"PatientID": "P1"}).json()
    assert (patient["PatientName"], patient["PatientSex"]) == ("DOE^P1", "")  # main tags
    studies = {s["StudyInstanceUID"]: s for s in patient["Studies"]}
    assert sorted(studies) == ["1.2.1", "1.2.2"]
    assert studies["1.2.1"]["StudyDescription"] == "study 1.2.1"
    assert sorted(s["SeriesInstanceUID"] for s in studies["1.2.1"]["Series"]) == \
        ["1.2.1.1", "1.2.1.2"]
    assert {s["Modality"] for s in studies["1.2.2"]["Series"]} == {"CT"}
