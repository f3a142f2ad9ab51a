"""The Python recipes of the README (``plugins/lua/examples``), loaded as the core loads
site plugins (the ``Plugins`` option), against a real server and storage SCP."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from lua_support import StoreSCP, config_with_sample, listening, sample_peer, scu, wait_for  # noqa: F401
from pydicom.dataset import Dataset
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind as PATIENT_FIND,
)

import lanthorn
from lanthorn import Origin, Server
from lanthorn.testing import make_instance

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def recipe(name: str) -> pytest.MarkDecorator:
    return pytest.mark.lanthorn_config(Plugins=[str(EXAMPLES / f"{name}.py")])


@recipe("autorouting")
def test_autorouting(lanthorn_client: Any, peer: StoreSCP) -> None:
    lanthorn_client.post("/instances", content=make_instance(SOPInstanceUID="1.2.3.4"))
    wait_for(lambda: peer.received)
    assert peer.received[0].sop_instance == "1.2.3.4"
    jobs = wait_for(lambda: lanthorn_client.get("/jobs?expand").json())
    assert jobs[0]["Type"] == "DicomModalityStore"
    assert len(lanthorn_client.get("/instances").json()) == 1


@recipe("reject_by_modality")
def test_reject_by_modality(lanthorn_client: Any) -> None:
    assert lanthorn_client.post("/instances", content=make_instance(Modality="CT")
                                ).status_code == 200
    refused = lanthorn_client.post("/instances", content=make_instance(Modality="MR"))
    assert refused.status_code == 403
    assert refused.json()["Details"] == 'modality "MR" is not accepted here'
    assert len(lanthorn_client.get("/instances").json()) == 1


@recipe("anonymize_forward")
def test_anonymize_then_forward(lanthorn_client: Any, peer: StoreSCP) -> None:
    lanthorn_client.post("/instances", content=make_instance(PatientName="DOE^JANE",
                                                             PatientID="SECRET"))
    wait_for(lambda: peer.received)
    forwarded = pydicom.dcmread(io.BytesIO(peer.received[0].data_set), force=True)
    assert str(forwarded.PatientName) == "Anonymous"
    assert forwarded.PatientID != "SECRET"
    [patient] = lanthorn_client.get("/patients?expand").json()  # the original is deleted
    assert patient["MainDicomTags"]["PatientName"] == "Anonymous"


@recipe("delete_after_forward")
def test_delete_after_forward(lanthorn_client: Any, peer: StoreSCP) -> None:
    lanthorn_client.post("/instances", content=make_instance(SOPInstanceUID="1.2.3.5"))
    [job] = wait_for(lambda: [j for j in lanthorn_client.get("/jobs?expand").json()
                              if j["State"] == "Success"])
    assert job["Type"] == "ForwardThenDelete"
    assert [r.sop_instance for r in peer.received] == ["1.2.3.5"]
    assert lanthorn_client.get("/instances").json() == []


@recipe("delete_after_forward")
@pytest.mark.lanthorn_config(JobRetryCount=1, JobRetryDelay=0.2)
def test_delete_after_forward_keeps_what_the_peer_refused(lanthorn_client: Any,
                                                          peer: StoreSCP) -> None:
    peer.status = 0xA700
    lanthorn_client.post("/instances", content=make_instance())
    wait_for(lambda: [j for j in lanthorn_client.get("/jobs?expand").json()
                      if j["State"] == "Failure"])
    assert len(peer.received) == 2  # the first attempt and one retry
    assert len(lanthorn_client.get("/instances").json()) == 1


class Received:
    """The patient names the C-FIND SCP was asked for."""

    def __init__(self) -> None:
        self.names: list[str] = []

    @lanthorn.hookimpl
    def filter_find_request(self, request: lanthorn.DimseRequest) -> None:
        self.names.append(str(request.identifier.get("PatientName", "-")))


RECEIVED = Received()


@recipe("fix_find_queries")
@pytest.mark.lanthorn_plugins(RECEIVED)
@pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1", DicomAlwaysAllowFind=True)
def test_fix_find_queries(lanthorn_server: Server, lanthorn_client: Any) -> None:
    lanthorn_server.ingest.store(make_instance(PatientID="P1"), Origin())
    lanthorn_client.put("/modalities/sample", json={  # our own listener plays the PACS
        "AET": lanthorn_server.config["DicomAet"], "Host": "127.0.0.1",
        "Port": lanthorn_server.config["DicomPort"]})
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "PATIENT"
    identifier.PatientID = ""
    identifier.add_new((0x0009, 0x0010), "LO", "MATCHES NOTHING")
    with listening(lanthorn_server):
        with scu(lanthorn_server.config["DicomPort"], PATIENT_FIND) as association:
            found = [a for _, a in association.send_c_find(identifier, PATIENT_FIND) if a]
        answers = lanthorn_client.post("/modalities/sample/find-patient",
                                       json={"PatientName": "*"}).json()
    assert [a.PatientID for a in found] == ["P1"]  # the private key would match nothing
    assert [a["PatientID"] for a in answers] == ["P1"]
    assert RECEIVED.names == ["-", ""]  # the "*" left as an empty key


@pytest.fixture
def copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LANTHORN_COPIES", str(tmp_path / "copies"))
    return tmp_path / "copies"


@recipe("write_to_disk")
def test_write_to_disk(copies: Path, lanthorn_server: Server) -> None:
    files = [make_instance(PatientID="DISK", StudyDate="20240102", SeriesDescription="AXIAL 5MM",
                           StudyInstanceUID="1.2.8", SeriesInstanceUID="1.2.9", seed=n)
             for n in range(2)]
    ids = [lanthorn_server.ingest.store(data, Origin()).id for data in files]
    folder = copies / "DISK" / "20240102" / "AXIAL_5MM"
    wait_for(lambda: len(list(folder.glob("*.dcm"))) == 2, timeout=30)
    assert {(folder / f"{i}.dcm").read_bytes() for i in ids} == set(files)
