"""Storage commitment (Push Model) both ways, against pynetdicom peers and Orthanc:
Lanthorn answers requests with a report sent over a new association, and asks modalities
whether they keep instances, over REST."""

from __future__ import annotations

import io
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pydicom
import pytest
from dimse_peers import PEER_AET, listening, store
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from starlette.testclient import TestClient

import lanthorn
from lanthorn.config import Config
from lanthorn.dimse.commitment import PUSH_MODEL, PUSH_MODEL_INSTANCE
from lanthorn.testing import free_port, make_instance, require_tool

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


def wait_until(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def references(*pairs: tuple[str, str]) -> list[Dataset]:
    items = []
    for sop_class, sop_instance in pairs:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_instance
        items.append(item)
    return items


class Peer:
    """A pynetdicom modality: asks for commitments, and receives or sends reports."""

    def __init__(self) -> None:
        self.port = free_port()
        self.reports: list[tuple[int, Dataset]] = []
        self.requests: list[Dataset] = []
        self.stored: list[str] = []
        self.ae = AE(PEER_AET)
        self.ae.add_supported_context(PUSH_MODEL, scu_role=True, scp_role=True)
        self.ae.add_supported_context(CT)  # to receive what it is then asked to commit

    def _on_report(self, event: Any) -> tuple[int, None]:
        self.reports.append((event.request.EventTypeID, event.event_information))
        return 0x0000, None

    def _on_action(self, event: Any) -> tuple[int, None]:
        self.requests.append(event.action_information)
        return 0x0000, None

    def _on_store(self, event: Any) -> int:
        self.stored.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    @property
    def handlers(self) -> list[Any]:
        return [(evt.EVT_N_EVENT_REPORT, self._on_report), (evt.EVT_N_ACTION, self._on_action),
                (evt.EVT_C_STORE, self._on_store)]

    @staticmethod
    def ask(port: int, request: Dataset, aet: str = PEER_AET) -> int:
        ae = AE(aet)
        ae.add_requested_context(PUSH_MODEL)
        association = ae.associate("127.0.0.1", port, ae_title="LANTHORN")
        assert association.is_established
        status, _ = association.send_n_action(request, 1, PUSH_MODEL, PUSH_MODEL_INSTANCE)
        association.release()
        return int(status.Status)

    def report(self, port: int, report: Dataset, event_type: int) -> int:
        ae = AE(PEER_AET)
        ae.add_requested_context(PUSH_MODEL)
        association = ae.associate("127.0.0.1", port, ae_title="LANTHORN",
                                   ext_neg=[build_role(PUSH_MODEL, scp_role=True)])
        assert association.is_established
        status, _ = association.send_n_event_report(report, event_type, PUSH_MODEL,
                                                    PUSH_MODEL_INSTANCE)
        association.release()
        return int(status.Status)


@pytest.fixture
def peer() -> Iterator[Peer]:
    modality = Peer()
    server = modality.ae.start_server(("127.0.0.1", modality.port), block=False,
                                      evt_handlers=modality.handlers)
    try:
        yield modality
    finally:
        server.shutdown()


@pytest.fixture
def lanthorn_config(lanthorn_config: Config, peer: Peer) -> Config:
    return lanthorn_config.with_overrides(
        DicomModalities={"peer": [PEER_AET, "127.0.0.1", peer.port]},
        DicomBindAddress="127.0.0.1", JobRetryDelay=0.2)


@pytest.fixture
def client(lanthorn_server: lanthorn.Server, lanthorn_client: TestClient
           ) -> Iterator[TestClient]:
    with listening(lanthorn_server):
        yield lanthorn_client


def test_lanthorn_reports_what_it_keeps(lanthorn_server: lanthorn.Server, client: TestClient,
                                        peer: Peer) -> None:
    kept = store(lanthorn_server)
    request = Dataset()
    request.TransactionUID = "1.2.3.99"
    request.ReferencedSOPSequence = references(
        (CT, kept.SOPInstanceUID), (CT, "1.2.3.404"), (MR, kept.SOPInstanceUID))
    assert peer.ask(lanthorn_server.config["DicomPort"], request) == 0x0000
    wait_until(lambda: peer.reports)
    [(event_type, report)] = peer.reports
    assert (event_type, report.TransactionUID) == (2, "1.2.3.99")  # 2: some failed
    assert [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID)
            for i in report.ReferencedSOPSequence] == [(CT, kept.SOPInstanceUID)]
    assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in report.FailedSOPSequence] \
        == [("1.2.3.404", 0x0112), (kept.SOPInstanceUID, 0x0119)]
    wait_until(lambda: [j["State"] for j in client.get("/jobs?expand").json()] == ["Success"])
    [job] = client.get("/jobs?expand").json()
    assert (job["Type"], job["Content"]["SuccessCount"]) == ("StorageCommitmentScp", 1)


def test_an_unknown_modality_may_not_ask(lanthorn_server: lanthorn.Server,
                                         client: TestClient, peer: Peer) -> None:
    request = Dataset()
    request.TransactionUID = "1.2.3.98"
    request.ReferencedSOPSequence = references((CT, "1.2.3.4"))
    assert peer.ask(lanthorn_server.config["DicomPort"], request, "STRANGER") == 0x0124
    assert client.get("/jobs").json() == []


def test_lanthorn_asks_and_reads_the_report_then_removes_what_was_committed(
        lanthorn_server: lanthorn.Server, client: TestClient, peer: Peer) -> None:
    committed, other = store(lanthorn_server), store(lanthorn_server)
    [instance] = [r.public_id for r in
                  lanthorn_server.index.lookup_identifier(committed.SOPInstanceUID)]
    answer = client.post("/modalities/peer/storage-commitment", json={
        "Resources": [instance], "DicomInstances": [{"SOPClassUID": CT,
                                                     "SOPInstanceUID": "1.2.3.404"}]})
    assert answer.status_code == 200, answer.text
    transaction = answer.json()["ID"]
    assert answer.json()["Path"] == f"/storage-commitment/{transaction}"
    [request] = peer.requests
    assert [i.ReferencedSOPInstanceUID for i in request.ReferencedSOPSequence] == \
        ["1.2.3.404", committed.SOPInstanceUID]
    assert client.get(f"/storage-commitment/{transaction}").json()["Status"] == "Pending"
    assert client.post(f"/storage-commitment/{transaction}/remove").status_code == 400

    report = Dataset()
    report.TransactionUID = transaction
    report.ReferencedSOPSequence = references((CT, committed.SOPInstanceUID))
    report.FailedSOPSequence = references((CT, "1.2.3.404"))
    report.FailedSOPSequence[0].FailureReason = 0x0112
    assert peer.report(lanthorn_server.config["DicomPort"], report, 2) == 0x0000
    assert client.get(f"/storage-commitment/{transaction}").json() == {
        "Failures": [{"Description": "No such object instance", "FailureReason": 0x0112,
                      "SOPClassUID": CT, "SOPInstanceUID": "1.2.3.404"}],
        "RemoteAET": PEER_AET, "Status": "Failure",
        "Success": [{"SOPClassUID": CT, "SOPInstanceUID": committed.SOPInstanceUID}]}
    assert client.post(f"/storage-commitment/{transaction}/remove").json() == {}
    assert [lanthorn_server.index.lookup_identifier(d.SOPInstanceUID) != []
            for d in (committed, other)] == [False, True]
    unknown = Dataset()
    unknown.TransactionUID = "1.2.3.777"
    assert peer.report(lanthorn_server.config["DicomPort"], unknown, 1) != 0x0000


def test_a_store_asks_for_commitment_of_every_instance_it_sent(
        lanthorn_server: lanthorn.Server, client: TestClient, peer: Peer) -> None:
    """``"StorageCommitment": true``: after the C-STOREs, one N-ACTION naming every
    instance of the request, also when the store runs as a job."""
    first, second = store(lanthorn_server), store(lanthorn_server)
    resources = [r.public_id for d in (first, second)
                 for r in lanthorn_server.index.lookup_identifier(d.SOPInstanceUID)]
    job = client.post("/modalities/peer/store", json={
        "Resources": resources, "StorageCommitment": True, "Asynchronous": True}).json()
    wait_until(lambda: client.get(f"/jobs/{job['ID']}").json()["State"] == "Success")
    transaction = client.get(f"/jobs/{job['ID']}").json()["Content"][
        "StorageCommitmentTransactionUID"]
    [request] = peer.requests
    assert request.TransactionUID == transaction
    assert sorted(i.ReferencedSOPInstanceUID for i in request.ReferencedSOPSequence) == \
        sorted(peer.stored) == sorted([first.SOPInstanceUID, second.SOPInstanceUID])
    assert client.get(f"/storage-commitment/{transaction}").json()["Status"] == "Pending"


def test_bad_storage_commitment_requests(client: TestClient) -> None:
    for body in ({}, {"DicomInstances": [{"SOPClassUID": CT}]}, {"Resources": ["nope"]},
                 {"DicomInstances": [[CT, "1.2"]], "Timeout": "soon"}):
        answer = client.post("/modalities/peer/storage-commitment", json=body)
        assert answer.status_code in (400, 404), body
    assert client.get("/storage-commitment/1.2.3").status_code == 404


def test_both_ways_with_orthanc(tmp_path: Path, lanthorn_config: Config) -> None:
    """Orthanc asks Lanthorn, and Lanthorn asks Orthanc, over real associations: after a
    store (``StorageCommitment`` in its body, as Orthanc's) and on its own."""
    binary = require_tool("Orthanc", "orthanc")
    http_port, dicom_port = free_port(), free_port()
    config = tmp_path / "orthanc.json"
    config.write_text(json.dumps({
        "DicomAet": "ORTHANC", "HttpPort": http_port, "DicomPort": dicom_port,
        "StorageDirectory": str(tmp_path / "orthanc"), "RemoteAccessAllowed": True,
        "AuthenticationEnabled": False, "Plugins": [],
        "DicomModalities": {"lanthorn": ["LANTHORN", "127.0.0.1", lanthorn_config["DicomPort"]]}}))
    server = lanthorn.Server(lanthorn_config.with_overrides(
        DicomModalities={"orthanc": ["ORTHANC", "127.0.0.1", dicom_port]}),
        load_entry_points=False)
    process = subprocess.Popen([binary, str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    server.start()
    try:
        with listening(server), TestClient(server.app) as ours, \
                httpx2.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30) as theirs:
            wait_until(lambda: _up(theirs))
            data = make_instance()
            uid = pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
            ours.post("/instances", content=data)
            asked = theirs.post("/modalities/lanthorn/storage-commitment", json={
                "DicomInstances": [[CT, uid], [CT, "1.2.3.404"]]}).json()["ID"]
            wait_until(lambda: theirs.get(f"/storage-commitment/{asked}").json()["Status"]
                       != "Pending")
            seen = theirs.get(f"/storage-commitment/{asked}").json()
            assert [s["SOPInstanceUID"] for s in seen["Success"]] == [uid]
            assert [f["SOPInstanceUID"] for f in seen["Failures"]] == ["1.2.3.404"]

            instance = ours.get("/instances").json()[0]
            sent = ours.post("/modalities/orthanc/store", json={
                "Resources": [instance], "StorageCommitment": True}).json()
            assert sent["InstancesCount"] == 1 and sent["FailedInstancesCount"] == 0
            chained = sent["StorageCommitmentTransactionUID"]
            ours_asked = ours.post("/modalities/orthanc/storage-commitment",
                                   json={"DicomInstances": [[CT, uid]]}).json()["ID"]
            for transaction in (chained, ours_asked):
                wait_until(lambda t=transaction: ours.get(f"/storage-commitment/{t}").json()[
                    "Status"] != "Pending")
                assert ours.get(f"/storage-commitment/{transaction}").json()["Status"] == \
                    "Success"
    finally:
        server.stop()
        server.close()
        process.kill()
        process.wait(30)


def _up(client: httpx2.Client) -> bool:
    try:
        return client.get("/system").status_code == 200
    except httpx2.HTTPError:
        return False

