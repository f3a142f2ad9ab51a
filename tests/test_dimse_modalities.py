"""``/modalities``: configuration in Orthanc's shapes, C-ECHO and C-STORE to a real
pynetdicom SCP, and Lanthorn's client sockets."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dimse_peers import PEER_AET, StoreSCP, store, tcp_nodelay
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from starlette.testclient import TestClient

import lanthorn
from lanthorn.dimse import scu
from lanthorn.dimse.access import parse_modalities
from lanthorn.testing import free_port, make_instance


@pytest.fixture
def peer() -> StoreSCP:
    return StoreSCP()


@pytest.fixture
def lanthorn_config(lanthorn_config: Any, peer: StoreSCP) -> Any:
    return lanthorn_config.with_overrides(DicomModalities={
        "peer": [PEER_AET, "127.0.0.1", peer.port],
        "down": {"AET": "DOWN", "Host": "127.0.0.1", "Port": free_port(), "AllowFind": False,
                 "Manufacturer": "GE"},
    })


@pytest.fixture
def remote(peer: StoreSCP) -> Iterator[StoreSCP]:
    with peer.running():
        yield peer


DOWN = {"AET": "DOWN", "AllowEcho": True, "AllowEventReport": True, "AllowFind": False,
        "AllowFindWorklist": True, "AllowGet": True, "AllowMove": True, "AllowNAction": True,
        "AllowStore": True, "AllowTranscoding": True, "Host": "127.0.0.1", "LocalAet": "",
        "Manufacturer": "GE", "Timeout": 0, "UseDicomTls": False}


def test_modalities_are_listed_in_orthanc_shapes(lanthorn_client: TestClient) -> None:
    assert lanthorn_client.get("/modalities").json() == ["down", "peer"]
    expanded = lanthorn_client.get("/modalities?expand").json()
    assert list(expanded) == ["down", "peer"]
    down = lanthorn_client.get("/modalities/down/configuration").json()
    assert down == {**DOWN, "Port": down["Port"]} == expanded["down"]
    peer = expanded["peer"]
    assert (peer["AET"], peer["Manufacturer"], peer["AllowFind"]) == (PEER_AET, "Generic", True)
    missing = lanthorn_client.get("/modalities/nowhere/configuration")
    assert missing.status_code == 404
    assert missing.json()["Details"] == "No modality with symbolic name: nowhere"


def test_echo(lanthorn_client: TestClient, remote: StoreSCP) -> None:
    answer = lanthorn_client.post("/modalities/peer/echo", json={})
    assert (answer.status_code, answer.json()) == (200, {})
    down = lanthorn_client.post("/modalities/down/echo")
    assert down.status_code == 500
    assert (down.json()["OrthancError"], down.json()["OrthancStatus"]) == \
        ("Error in the network protocol", 9)
    assert 'cannot reach modality "down"' in down.json()["Details"]


def test_echo_checks_find_when_asked(lanthorn_client: TestClient, remote: StoreSCP) -> None:
    """The peer echoes but has no C-FIND: ``CheckFind`` makes the echo fail (the answering
    case is in test_query_retrieve.py)."""
    assert lanthorn_client.post("/modalities/peer/echo", json={"CheckFind": False}).json() == {}
    refused = lanthorn_client.post("/modalities/peer/echo", json={"CheckFind": True})
    assert refused.status_code == 500
    assert "accepted none of the proposed presentation contexts" in refused.json()["Details"]
    wrong = lanthorn_client.post("/modalities/peer/echo", json={"CheckFind": "yes"})
    assert wrong.status_code == 400 and '"CheckFind"' in wrong.json()["Details"]


@pytest.mark.lanthorn_config(DicomEchoChecksFind=True)
def test_dicom_echo_checks_find_is_the_default(lanthorn_client: TestClient,
                                                remote: StoreSCP) -> None:
    assert lanthorn_client.post("/modalities/peer/echo").status_code == 500
    assert lanthorn_client.post("/modalities/peer/echo", json={"CheckFind": False}).json() == {}
    peer = {"AET": PEER_AET, "Host": "127.0.0.1", "Port": remote.port}
    assert lanthorn_client.post("/tools/dicom-echo", json=peer).status_code == 500
    assert lanthorn_client.post("/tools/dicom-echo", json={**peer, "CheckFind": False}
                                ).json() == {}


def test_echo_to_a_modality_given_in_the_body(lanthorn_client: TestClient,
                                               remote: StoreSCP) -> None:
    answer = lanthorn_client.post("/tools/dicom-echo", json={
        "AET": PEER_AET, "Host": "127.0.0.1", "Port": remote.port})
    assert (answer.status_code, answer.json()) == (200, {})
    down = lanthorn_client.post("/tools/dicom-echo", json={
        "AET": "DOWN", "Host": "127.0.0.1", "Port": free_port()})
    assert down.json()["OrthancStatus"] == 9
    assert lanthorn_client.post("/tools/dicom-echo", json={"AET": "X"}).status_code == 400


def test_store_a_study_synchronously(lanthorn_server: lanthorn.Server,
                                     lanthorn_client: TestClient, remote: StoreSCP) -> None:
    uids = [store(lanthorn_server, PatientID="P1", StudyInstanceUID="1.2.3",
                  SeriesInstanceUID="1.2.3.1").SOPInstanceUID for _ in range(3)]
    [study] = lanthorn_client.get("/studies").json()
    answer = lanthorn_client.post("/modalities/peer/store",
                                  json={"Resources": [study], "Synchronous": True,
                                        "MoveOriginatorAet": "ORIGIN", "MoveOriginatorID": 7})
    assert answer.status_code == 200
    assert answer.json() == {"Description": "REST API", "FailedInstancesCount": 0,
                             "InstancesCount": 3, "LocalAet": "LANTHORN",
                             "ParentResources": [study], "RemoteAet": PEER_AET}
    assert sorted(r.sop_instance for r in remote.received) == sorted(uids)
    assert {r.move_originator for r in remote.received} == {"ORIGIN"}


def test_store_bodies_and_refusals(lanthorn_server: lanthorn.Server,
                                   lanthorn_client: TestClient, remote: StoreSCP) -> None:
    instance = lanthorn_client.post("/tools/lookup", content=store(lanthorn_server)
                                    .SOPInstanceUID).json()[0]["ID"]
    assert lanthorn_client.post("/modalities/peer/store", content=instance).json()[
        "InstancesCount"] == 1  # a bare ID
    assert lanthorn_client.post("/modalities/peer/store", json=[instance]).json()[
        "InstancesCount"] == 1  # a list of IDs
    unknown = lanthorn_client.post("/modalities/peer/store", json={"Resources": ["0" * 8]})
    assert unknown.status_code == 404
    assert lanthorn_client.post("/modalities/peer/store", json={}).status_code == 400
    assert len(remote.received) == 2


@pytest.mark.parametrize("peer", [StoreSCP(status=0xA700)], ids=["refusing-peer"])
def test_a_refused_store_fails_unless_permissive(lanthorn_server: lanthorn.Server,
                                                 lanthorn_client: TestClient,
                                                 remote: StoreSCP) -> None:
    for _ in range(2):
        store(lanthorn_server)
    patients = lanthorn_client.get("/patients").json()
    strict = lanthorn_client.post("/modalities/peer/store", json={"Resources": patients})
    assert strict.status_code == 500 and "status 0xA700" in strict.json()["Details"]
    assert len(remote.received) == 1  # the first failure stops the transfer
    permissive = lanthorn_client.post("/modalities/peer/store",
                                      json={"Resources": patients, "Permissive": True})
    assert (permissive.json()["InstancesCount"], permissive.json()["FailedInstancesCount"]) == \
        (2, 2)


def test_client_associations_set_tcp_nodelay(lanthorn_server: lanthorn.Server,
                                             remote: StoreSCP) -> None:
    modality = parse_modalities(lanthorn_server.config)["peer"]
    with scu.associate(lanthorn_server, modality, [build_context(Verification)]) as assoc:
        assert tcp_nodelay(assoc)


@pytest.mark.lanthorn_config(MaximumPduLength=16384)
def test_client_associations_propose_the_maximum_pdu_length(lanthorn_client: TestClient,
                                                            remote: StoreSCP) -> None:
    """What the peer reads in our A-ASSOCIATE-RQ, not our own setting read back."""
    remote.on_store = lambda event: event.assoc.requestor.maximum_length
    store_answer = lanthorn_client.post("/instances", content=make_instance())
    sent = lanthorn_client.post("/modalities/peer/store", json=[store_answer.json()["ID"]])
    assert sent.status_code == 200 and remote.seen_during_store == [16384]


def test_a_store_body_overrides_the_modality_for_one_request(lanthorn_client: TestClient,
                                                             remote: StoreSCP) -> None:
    """Orthanc's ``CalledAet``, ``Host``, ``Port`` and ``LocalAet`` of a store body: "down"
    points at a closed port, the body sends to the peer instead, under other AETs."""
    remote.on_store = lambda event: (event.assoc.requestor.primitive.called_ae_title.strip(),
                                     event.assoc.requestor.ae_title)
    instance = lanthorn_client.post("/instances", content=make_instance()).json()["ID"]
    body = {"Resources": [instance], "CalledAet": "ELSEWHERE", "Host": "127.0.0.1",
            "Port": remote.port, "LocalAet": "SENDER"}
    sent = lanthorn_client.post("/modalities/down/store", json=body).json()
    assert (sent["RemoteAet"], sent["LocalAet"], sent["FailedInstancesCount"]) == \
        ("ELSEWHERE", "SENDER", 0)
    assert remote.seen_during_store == [("ELSEWHERE", "SENDER")]
    for wrong in ({"Port": "x"}, {"CalledAet": "A" * 17}, {"Host": 3}):
        answer = lanthorn_client.post("/modalities/down/store",
                                      json={**body, **wrong, "Asynchronous": True})
        assert answer.status_code == 400 and next(iter(wrong)) in answer.json()["Details"]


@pytest.fixture
def hung(lanthorn_client: TestClient) -> Iterator[str]:
    """A modality whose port accepts connections and never answers (the kernel completes
    the handshake; nobody reads), defined over REST."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        assert lanthorn_client.put("/modalities/hung", json={
            "AET": "HUNG", "Host": "127.0.0.1", "Port": port}).status_code == 200
        yield "/modalities/hung"


def failed_within(seconds: float, call: Callable[[], Any]) -> None:
    """``call`` must answer a network error (500, no answer) within ``seconds``."""
    started = time.monotonic()
    answer = call()
    assert answer.status_code == 500 and "no answer" in answer.json()["Details"]
    assert time.monotonic() - started < seconds


def test_a_request_timeout_overrides_dicom_scu_timeout(lanthorn_client: TestClient,
                                                       hung: str) -> None:
    """``DicomScuTimeout`` is 10 s; a body's ``Timeout`` of 1 s gives up sooner."""
    failed_within(5, lambda: lanthorn_client.post(hung + "/echo", json={"Timeout": 1}))
    instance = lanthorn_client.post("/instances", content=make_instance()).json()["ID"]
    failed_within(5, lambda: lanthorn_client.post(hung + "/store", json={
        "Resources": [instance], "Timeout": 1}))
    for path, body in (("/echo", {"Timeout": "soon"}),
                       ("/store", {"Resources": [instance], "Timeout": -1, "Asynchronous": True})):
        wrong = lanthorn_client.post(hung + path, json=body)
        assert wrong.status_code == 400 and '"Timeout"' in wrong.json()["Details"], path
    assert lanthorn_client.get("/jobs").json() == []  # refused before a job was queued


@pytest.mark.lanthorn_config(DicomScuTimeout=1)
def test_dicom_scu_timeout_bounds_the_wait_for_a_silent_modality(lanthorn_client: TestClient,
                                                                 hung: str) -> None:
    failed_within(5, lambda: lanthorn_client.post(hung + "/echo"))


def test_store_straight_sends_without_storing(lanthorn_client: TestClient,
                                              remote: StoreSCP) -> None:
    data = make_instance(PatientID="STRAIGHT")
    answer = lanthorn_client.post("/modalities/peer/store-straight", content=data)
    sent = pydicom.dcmread(io.BytesIO(data))
    assert answer.json() == {"SOPClassUID": sent.SOPClassUID,
                             "SOPInstanceUID": sent.SOPInstanceUID}
    assert [r.sop_instance for r in remote.received] == [sent.SOPInstanceUID]
    assert lanthorn_client.get("/instances").json() == []
    bad = lanthorn_client.post("/modalities/peer/store-straight", content=b"not dicom")
    assert bad.status_code == 400
    assert lanthorn_client.get("/modalities/peer").json()[-1] == "store-straight"
    assert lanthorn_client.get("/modalities/nowhere").status_code == 404


@pytest.mark.parametrize("allowed", [True, False])
def test_a_compressed_instance_is_transcoded_for_a_peer_that_refuses_its_syntax(
        lanthorn_server: lanthorn.Server, lanthorn_client: TestClient, lanthorn_config: Any,
        allowed: bool) -> None:
    jpeg = get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")
    peer = StoreSCP(syntaxes=[ExplicitVRLittleEndian])
    lanthorn_server.config = lanthorn_config.with_overrides(DicomModalities={"picky": {
        "AET": PEER_AET, "Host": "127.0.0.1", "Port": peer.port,
        "AllowTranscoding": allowed}})
    stored = lanthorn_client.post("/instances", content=Path(jpeg).read_bytes()).json()
    with peer.running():
        report = lanthorn_client.post("/modalities/picky/store",
                                      json={"Resources": [stored["ID"]], "Permissive": True})
    if not allowed:
        assert (report.json()["FailedInstancesCount"], peer.received) == (1, [])
        return
    assert report.json()["FailedInstancesCount"] == 0
    [received] = peer.received
    assert received.transfer_syntax == ExplicitVRLittleEndian
    original = pydicom.dcmread(jpeg)
    sent = pydicom.dcmread(io.BytesIO(received.data_set), force=True)
    sent.file_meta = pydicom.dataset.FileMetaDataset()
    sent.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assert (sent.pixel_array == original.pixel_array).all()


def test_modalities_defined_over_rest(lanthorn_server: lanthorn.Server,
                                      lanthorn_client: TestClient, remote: StoreSCP) -> None:
    added = {"AET": PEER_AET, "Host": "127.0.0.1", "Port": remote.port, "AllowFind": False}
    assert lanthorn_client.put("/modalities/added", json=added).json() == {}
    assert lanthorn_client.get("/modalities").json() == ["added", "down", "peer"]
    shown = lanthorn_client.get("/modalities/added/configuration").json()
    assert (shown["AET"], shown["Port"], shown["AllowFind"], shown["AllowStore"]) == \
        (PEER_AET, remote.port, False, True)
    assert lanthorn_client.post("/modalities/added/echo").status_code == 200
    assert lanthorn_client.delete("/modalities/down").json() == {}  # one of the configuration
    assert lanthorn_client.get("/modalities/down/configuration").status_code == 404
    assert lanthorn_client.delete("/modalities/down").status_code == 404
    bad = lanthorn_client.put("/modalities/broken", json={"AET": PEER_AET, "Host": "h", "Port": 0})
    assert bad.status_code == 400 and "port" in bad.json()["Details"]


@pytest.mark.parametrize("kept", [False, True])
def test_rest_modalities_outlive_a_restart_only_when_kept_in_the_database(
        lanthorn_config: Any, kept: bool) -> None:
    config = lanthorn_config.with_overrides(DicomModalitiesInDatabase=kept)

    def started() -> lanthorn.Server:
        server = lanthorn.Server(config, load_entry_points=False)
        server.start()
        return server

    first = started()
    with TestClient(first.app) as client:
        client.put("/modalities/added", json={"AET": "ADDED", "Host": "h", "Port": 104})
    first.stop()
    first.close()
    second = started()
    try:
        with TestClient(second.app) as client:
            assert ("added" in client.get("/modalities").json()) == kept
    finally:
        second.stop()
        second.close()


@pytest.mark.lanthorn_config(LogExportedResources=True)
def test_exports_record_what_was_sent(lanthorn_server: lanthorn.Server,
                                      lanthorn_client: TestClient, remote: StoreSCP) -> None:
    uids = [store(lanthorn_server, PatientID="P1", StudyInstanceUID="1.2.3",
                  SeriesInstanceUID="1.2.3.1").SOPInstanceUID for _ in range(2)]
    [study] = lanthorn_client.get("/studies").json()
    lanthorn_client.post("/modalities/peer/store", json={"Resources": [study]})
    first = lanthorn_client.get("/exports?limit=1").json()
    assert (len(first["Exports"]), first["Done"]) == (1, False)
    rest = lanthorn_client.get(f"/exports?since={first['Last']}").json()
    exported = first["Exports"] + rest["Exports"]
    assert rest["Done"] and sorted(e["SOPInstanceUID"] for e in exported) == sorted(uids)
    assert {(e["RemoteModality"], e["ResourceType"], e["StudyInstanceUID"], e["PatientID"])
            for e in exported} == {(PEER_AET, "Instance", "1.2.3", "P1")}
    assert exported[0]["Path"] == f"/instances/{exported[0]['ID']}"
    assert lanthorn_client.delete("/exports").json() == {}
    assert lanthorn_client.get("/exports").json() == {"Exports": [], "Done": True, "Last": 0}
