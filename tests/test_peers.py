"""``/peers``: Orthanc's shapes, ``/system``, store (now and as a retried job) and
store-straight to a second Lanthorn server process and to Orthanc 1.10 (with basic
authentication), and peers defined over REST (kept across restarts only when asked)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from dimse_peers import store
from starlette.testclient import TestClient
from test_jobs import wait_job

import lanthorn
from lanthorn.config import Config, ConfigError
from lanthorn.testing import ServerProcess, free_port, make_instance, require_tool

AUTH = ("alice", "secret")
pytestmark = pytest.mark.lanthorn_config(JobRetryCount=1, JobRetryDelay=0.2)


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A second Lanthorn server."""
    folder = tmp_path_factory.mktemp("remote")
    process = ServerProcess(folder / "config.json", free_port(), free_port(),
                            folder / "server.log")
    process.config_path.write_text(json.dumps({
        "Name": "REMOTE", "StorageDirectory": str(folder / "storage"),
        "HttpPort": process.http_port, "DicomPort": process.dicom_port,
        "HttpBindAddress": "127.0.0.1", "DicomBindAddress": "127.0.0.1"}))
    try:
        yield process.start()
    finally:
        process.kill_group()


@pytest.fixture
def lanthorn_config(lanthorn_config: Config, remote: ServerProcess) -> Config:
    return lanthorn_config.with_overrides(OrthancPeers={
        "remote": {"Url": remote.url, "Username": AUTH[0], "Password": AUTH[1],
                   "HttpHeaders": {"X-Trace": "lanthorn"}, "Timeout": 10},
        "other": [remote.url + "/"],
        "down": [f"http://127.0.0.1:{free_port()}"],
    })


def remote_get(remote: ServerProcess, path: str) -> httpx2.Response:
    return httpx2.get(remote.url + path, timeout=10)


def test_peers_are_listed_in_orthanc_shapes(lanthorn_client: TestClient,
                                            remote: ServerProcess) -> None:
    assert lanthorn_client.get("/peers").json() == ["down", "other", "remote"]
    expanded = lanthorn_client.get("/peers?expand").json()
    assert expanded["remote"] == {"HttpHeaders": ["X-Trace"], "Password": None,
                                  "Pkcs11": False, "Timeout": 10, "Url": remote.url + "/",
                                  "Username": "alice"}
    assert expanded["down"] == lanthorn_client.get("/peers/down/configuration").json()
    assert set(expanded["down"]) == {"HttpHeaders", "Pkcs11", "Timeout", "Url"}
    assert lanthorn_client.get("/peers/remote").json() == [
        "configuration", "store", "store-straight", "system"]
    missing = lanthorn_client.get("/peers/nowhere/system")
    assert (missing.status_code, missing.json()["Details"]) == (
        404, "No peer with symbolic name: nowhere")


def test_system_of_a_peer(lanthorn_client: TestClient) -> None:
    assert lanthorn_client.get("/peers/remote/system").json()["Name"] == "REMOTE"
    failed = lanthorn_client.get("/peers/down/system")
    assert (failed.status_code, failed.json()["OrthancStatus"]) == (500, 9)
    assert 'cannot reach peer "down"' in failed.json()["Details"]


def test_store_to_a_peer_sends_the_files_unchanged(
        lanthorn_server: lanthorn.Server, lanthorn_client: TestClient,
        remote: ServerProcess) -> None:
    study = "1.2.826.0.1.3680043.8.498.7001"
    for _ in range(3):
        store(lanthorn_server, PatientID="PEER1", StudyInstanceUID=study)
    [study_id] = lanthorn_client.get("/studies").json()
    report = lanthorn_client.post("/peers/remote/store", json={"Resources": [study_id]}).json()
    instances = lanthorn_client.get(f"/studies/{study_id}/instances?expand=false").json()
    size = sum(len(lanthorn_client.get(f"/instances/{i}/file").content) for i in instances)
    assert report == {"Compress": False, "Description": "REST API", "FailedInstancesCount": 0,
                      "InstancesCount": 3, "ParentResources": [study_id],
                      "Peer": [remote.url + "/"], "Size": str(size), "SizeMB": 0}
    for instance in instances:
        assert remote_get(remote, f"/instances/{instance}/file").content == \
            lanthorn_client.get(f"/instances/{instance}/file").content
    refused = lanthorn_client.post("/peers/remote/store-straight", content=b"not DICOM")
    assert (refused.status_code, refused.json()["OrthancStatus"]) == (500, 9)
    assert lanthorn_client.post("/peers/remote/store", json=["0" * 8]).status_code == 404
    assert lanthorn_client.post("/peers/remote/store", json={}).status_code == 400


def test_store_job_retries_then_succeeds_once_the_peer_is_fixed(
        lanthorn_server: lanthorn.Server, lanthorn_client: TestClient,
        remote: ServerProcess) -> None:
    uid = store(lanthorn_server, PatientID="PEER2").SOPInstanceUID
    [instance] = lanthorn_client.get("/instances").json()
    job_id = lanthorn_client.post("/peers/down/store", json={
        "Resources": [instance], "Asynchronous": True}).json()["ID"]
    wait_job(lanthorn_client.get, job_id, lambda job: job["State"] == "Retry")
    failed = wait_job(lanthorn_client.get, job_id)
    assert (failed["State"], failed["Type"], failed["ErrorCode"]) == (
        "Failure", "OrthancPeerStore", 9)
    assert lanthorn_server.index.jobs.get(job_id).attempts == 2  # JobRetryCount=1
    # The job names the peer: once "down" points to a live server, a resubmit succeeds.
    redefined = {"URL": remote.url, "Username": AUTH[0], "Password": AUTH[1]}
    assert lanthorn_client.put("/peers/down", json=redefined).json() == {}
    assert lanthorn_client.post(f"/jobs/{job_id}/resubmit").json() == {}
    done = wait_job(lanthorn_client.get, job_id)
    assert (done["State"], done["Content"]["FailedInstancesCount"],
            done["Content"]["InstancesCount"]) == ("Success", 0, 1)
    found = httpx2.post(remote.url + "/tools/lookup", content=uid).json()
    assert [f["ID"] for f in found] == [instance]


def test_store_straight_forwards_without_storing(lanthorn_client: TestClient,
                                                 remote: ServerProcess) -> None:
    data = make_instance(PatientID="STRAIGHT")
    answer = lanthorn_client.post("/peers/remote/store-straight", content=data)
    assert answer.status_code == 200 and answer.json()["Status"] == "Success"
    assert remote_get(remote, f"/instances/{answer.json()['ID']}/file").content == data
    assert lanthorn_client.get("/instances").json() == []
    garbage = lanthorn_client.post("/peers/remote/store-straight", content=b"garbage")
    assert garbage.status_code == 500
    assert "Cannot send DICOM to remote peer: remote" in garbage.json()["Details"]


def test_peers_defined_and_deleted_over_rest(lanthorn_client: TestClient) -> None:
    assert lanthorn_client.put("/peers/extra", json=["http://127.0.0.1:1"]).json() == {}
    assert lanthorn_client.delete("/peers/other").json() == {}
    assert lanthorn_client.get("/peers").json() == ["down", "extra", "remote"]
    assert lanthorn_client.get("/peers/extra/configuration").json()["Url"] == \
        "http://127.0.0.1:1/"
    empty = lanthorn_client.put("/peers/bad", json={})
    assert (empty.status_code, empty.json()["Details"]) == (400, "Empty URL")
    for body in ([1, 2], {"Url": "ftp://x"}, {"Url": "http://x", "Timeout": -1}, "x"):
        assert lanthorn_client.put("/peers/bad", json=body).status_code == 400, body
    unknown = lanthorn_client.delete("/peers/other")
    assert (unknown.status_code, unknown.json()["Details"]) == (
        404, "Unknown Orthanc peer: other")


@pytest.mark.parametrize("in_database", [False, True])
def test_rest_peers_survive_a_restart_only_in_the_database(
        lanthorn_config: Config, in_database: bool) -> None:
    config = lanthorn_config.with_overrides(OrthancPeersInDatabase=in_database)

    def peers_after(change: dict[str, Any] | None = None) -> list[str]:
        server = lanthorn.Server(config, load_entry_points=False)
        server.start()
        try:
            with TestClient(server.app) as client:
                if change:
                    client.put("/peers/extra", json=change)
                    client.delete("/peers/down")
                return client.get("/peers").json()
        finally:
            server.stop()
            server.close()

    assert peers_after({"Url": "http://127.0.0.1:1"}) == ["extra", "other", "remote"]
    assert peers_after() == (["extra", "other", "remote"] if in_database
                             else ["down", "other", "remote"])


def test_a_malformed_configured_peer_stops_start_up(lanthorn_config: Config) -> None:
    with pytest.raises(ConfigError, match='OrthancPeers: peer "bad"'):
        lanthorn.Server(lanthorn_config.with_overrides(OrthancPeers={"bad": {"Url": "x"}}),
                        load_entry_points=False)


@pytest.fixture
def orthanc(tmp_path: Path, remote: ServerProcess) -> Iterator[str]:
    """Orthanc 1.10 on loopback (basic authentication), with the remote Lanthorn server
    as its peer."""
    binary = require_tool("Orthanc", "orthanc")
    port = free_port()
    config = tmp_path / "orthanc.json"
    config.write_text(json.dumps({
        "Name": "ORTHANC", "StorageDirectory": str(tmp_path / "orthanc"),
        "IndexDirectory": str(tmp_path / "orthanc"), "HttpPort": port,
        "DicomPort": free_port(), "RemoteAccessAllowed": False, "Plugins": [],
        "AuthenticationEnabled": True, "RegisteredUsers": {AUTH[0]: AUTH[1]},
        "OrthancPeers": {"lanthorn": [remote.url]}}))
    with open(tmp_path / "orthanc.log", "wb") as log:
        process = subprocess.Popen([binary, str(config)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx2.get(url + "/system", auth=AUTH, timeout=1).raise_for_status()
                break
            except httpx2.HTTPError:
                assert time.monotonic() < deadline, (tmp_path / "orthanc.log").read_text()
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def test_lanthorn_and_orthanc_send_to_each_other(
        lanthorn_client: TestClient, orthanc: str, remote: ServerProcess) -> None:
    assert lanthorn_client.put("/peers/orthanc", json=[orthanc, *AUTH]).json() == {}
    assert lanthorn_client.put("/peers/intruder", json={
        "Url": orthanc, "Username": AUTH[0], "Password": "wrong"}).json() == {}
    assert lanthorn_client.get("/peers/orthanc/system").json()["Version"].startswith("1.")
    refused = lanthorn_client.get("/peers/intruder/system")
    assert refused.status_code == 500 and "HTTP 401" in refused.json()["Details"]
    data = make_instance(PatientID="TO-ORTHANC")
    instance = lanthorn_client.post("/instances", content=data).json()["ID"]
    report = lanthorn_client.post("/peers/orthanc/store", content=instance).json()
    assert (report["InstancesCount"], report["FailedInstancesCount"]) == (1, 0)
    assert httpx2.get(f"{orthanc}/instances/{instance}/file", auth=AUTH).content == data
    # Orthanc's own peer client, to the remote Lanthorn.
    sent = httpx2.post(f"{orthanc}/peers/lanthorn/store", content=instance, auth=AUTH,
                       timeout=30)
    assert sent.json()["FailedInstancesCount"] == 0, sent.text
    assert remote_get(remote, f"/instances/{instance}/file").content == data
