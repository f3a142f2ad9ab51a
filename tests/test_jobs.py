"""Jobs: asynchronous archives and stores in Orthanc's shapes, the state machine of
``/jobs/{id}/*``, retries with back-off, checkpoints, history, and survival of a
``kill -9`` (a real server process and a real pynetdicom storage SCP)."""

from __future__ import annotations

import io
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from dimse_peers import PEER_AET, StoreSCP, store
from starlette.testclient import TestClient

import lanthorn
from lanthorn.config import Config
from lanthorn.jobs import JobInterrupted
from lanthorn.testing import ServerProcess

#: The keys of a job in Orthanc 1.10's answers, and of its content per job type.
JOB_KEYS = {"CompletionTime", "Content", "CreationTime", "EffectiveRuntime", "ErrorCode",
            "ErrorDescription", "ErrorDetails", "ID", "Priority", "Progress", "State",
            "Timestamp", "Type"}
ARCHIVE_CONTENT = {"ArchiveSize", "ArchiveSizeMB", "Description", "InstancesCount",
                   "UncompressedSize", "UncompressedSizeMB"}
STORE_CONTENT = {"Description", "FailedInstancesCount", "InstancesCount", "LocalAet",
                 "ParentResources", "RemoteAet"}
Get = Callable[[str], Any]
pytestmark = [pytest.mark.all_index_backends,
              pytest.mark.lanthorn_config(JobRetryCount=1, JobRetryDelay=0.2)]


def wait_job(get: Get, job_id: str, until: Callable[[dict[str, Any]], bool] | None = None,
             timeout: float = 30) -> dict[str, Any]:
    """Poll ``GET /jobs/{id}`` until ``until`` holds (by default: the job finished)."""
    until = until or (lambda job: job["State"] in ("Success", "Failure"))
    deadline = time.monotonic() + timeout
    while True:
        job = get(f"/jobs/{job_id}").json()
        if until(job) or time.monotonic() > deadline:
            assert until(job), job
            return job
        time.sleep(0.05)


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def study_of(server: lanthorn.Server, count: int, **tags: str) -> list[str]:
    """Store ``count`` instances of one study; their SOP Instance UIDs."""
    return [store(server, PatientID="P1", StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.3.1",
                  **tags).SOPInstanceUID for _ in range(count)]


# -- archives ---------------------------------------------------------------------------

def test_asynchronous_archive_is_a_job_whose_output_is_the_archive(
        lanthorn_server: lanthorn.Server, lanthorn_client: TestClient) -> None:
    study_of(lanthorn_server, 3)
    [study] = lanthorn_client.get("/studies").json()
    submitted = lanthorn_client.post(f"/studies/{study}/archive", json={"Asynchronous": True})
    job_id = submitted.json()["ID"]
    assert submitted.json() == {"ID": job_id, "Path": f"/jobs/{job_id}"}
    job = wait_job(lanthorn_client.get, job_id)
    assert set(job) == JOB_KEYS and set(job["Content"]) == ARCHIVE_CONTENT
    assert (job["State"], job["Type"], job["Progress"], job["ErrorCode"],
            job["ErrorDescription"]) == ("Success", "Archive", 100, 0, "Success")
    assert job["Content"]["InstancesCount"] == 3
    output = lanthorn_client.get(f"/jobs/{job_id}/archive")
    assert output.headers["content-type"] == "application/zip"
    assert output.headers["content-length"] == job["Content"]["ArchiveSize"]
    assert members(output.content) == members(lanthorn_client.get(f"/studies/{study}/archive")
                                              .content)
    assert lanthorn_client.get("/jobs").json() == [job_id]
    assert [j["ID"] for j in lanthorn_client.get("/jobs?expand").json()] == [job_id]


def test_asynchronous_media_and_deleting_outputs_and_jobs(
        lanthorn_server: lanthorn.Server, lanthorn_client: TestClient) -> None:
    study_of(lanthorn_server, 2)
    [study] = lanthorn_client.get("/studies").json()
    job_id = lanthorn_client.post("/tools/create-media", json={
        "Resources": [study], "Synchronous": False, "Filename": "cd.zip"}).json()["ID"]
    assert wait_job(lanthorn_client.get, job_id)["Type"] == "Media"
    output = lanthorn_client.get(f"/jobs/{job_id}/archive")
    assert "DICOMDIR" in members(output.content)
    assert output.headers["content-disposition"] == 'attachment; filename="cd.zip"'
    [uuid] = [o["uuid"] for o in lanthorn_server.index.jobs.get(job_id).outputs.values()]
    assert lanthorn_server.storage.exists(uuid)
    assert lanthorn_client.delete(f"/jobs/{job_id}/archive").status_code == 200
    assert not lanthorn_server.storage.exists(uuid)
    assert lanthorn_client.get(f"/jobs/{job_id}/archive").status_code == 404
    assert lanthorn_client.delete(f"/jobs/{job_id}").status_code == 200
    assert lanthorn_client.get(f"/jobs/{job_id}").status_code == 404
    assert lanthorn_client.get("/jobs").json() == []


@pytest.mark.lanthorn_config(JobsHistorySize=2)
def test_history_keeps_the_most_recent_finished_jobs_and_drops_older_outputs(
        lanthorn_server: lanthorn.Server, lanthorn_client: TestClient) -> None:
    study_of(lanthorn_server, 1)
    [study] = lanthorn_client.get("/studies").json()
    jobs, outputs = [], []
    for _ in range(3):
        jobs.append(lanthorn_client.post(f"/studies/{study}/archive",
                                         json={"Asynchronous": True}).json()["ID"])
        wait_job(lanthorn_client.get, jobs[-1])
        outputs.append(lanthorn_server.index.jobs.get(jobs[-1]).outputs["archive"]["uuid"])
    # The history is pruned right after the third job finishes: rows first, then files.
    deadline = time.monotonic() + 10
    while lanthorn_server.storage.exists(outputs[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(lanthorn_client.get("/jobs").json()) == sorted(jobs[1:])
    assert [lanthorn_server.storage.exists(uuid) for uuid in outputs] == [False, True, True]


# -- stores, retries and controls --------------------------------------------------------

@pytest.fixture
def peer() -> StoreSCP:
    return StoreSCP()


@pytest.fixture
def lanthorn_config(lanthorn_config: Config, peer: StoreSCP) -> Config:
    return lanthorn_config.with_overrides(
        DicomModalities={"peer": [PEER_AET, "127.0.0.1", peer.port]})


def submit_store(client: TestClient, study: str, **options: Any) -> str:
    answer = client.post("/modalities/peer/store",
                         json={"Resources": [study], "Asynchronous": True, **options})
    assert answer.status_code == 200, answer.text
    return answer.json()["ID"]


def test_store_job_retries_fails_visibly_and_succeeds_when_resubmitted(
        lanthorn_server: lanthorn.Server, lanthorn_client: TestClient, peer: StoreSCP) -> None:
    uids = study_of(lanthorn_server, 2)
    [study] = lanthorn_client.get("/studies").json()
    job_id = submit_store(lanthorn_client, study)
    wait_job(lanthorn_client.get, job_id, lambda job: job["State"] == "Retry")
    failed = wait_job(lanthorn_client.get, job_id)
    assert set(failed) == JOB_KEYS and set(failed["Content"]) == STORE_CONTENT
    assert (failed["State"], failed["Type"], failed["ErrorCode"],
            failed["ErrorDescription"]) == ("Failure", "DicomModalityStore", 9,
                                            "Error in the network protocol")
    assert "peer" in failed["ErrorDetails"]
    assert lanthorn_server.index.jobs.get(job_id).attempts == 2  # JobRetryCount=1
    with peer.running():
        assert lanthorn_client.post(f"/jobs/{job_id}/resubmit").json() == {}
        done = wait_job(lanthorn_client.get, job_id)
    assert done["State"] == "Success"
    assert done["Content"] == {"Description": "REST API", "FailedInstancesCount": 0,
                               "InstancesCount": 2, "LocalAet": "LANTHORN",
                               "ParentResources": [study], "RemoteAet": PEER_AET}
    assert sorted(r.sop_instance for r in peer.received) == sorted(uids)


def test_a_retried_store_resumes_after_the_instances_already_sent(
        lanthorn_server: lanthorn.Server, lanthorn_client: TestClient, peer: StoreSCP) -> None:
    uids = study_of(lanthorn_server, 5)
    [study] = lanthorn_client.get("/studies").json()

    def refuse_the_third_once(event: Any) -> None:
        peer.status = 0xA700 if len(peer.received) == 2 and peer.status == 0 else 0x0000

    peer.on_store = refuse_the_third_once
    with peer.running():
        job = wait_job(lanthorn_client.get, submit_store(lanthorn_client, study))
    assert job["State"] == "Success", job
    received = Counter(r.sop_instance for r in peer.received)
    assert set(received) == set(uids) and sorted(received.values()) == [1, 1, 1, 1, 2]


def test_cancel_pause_resume_of_a_running_store(
        lanthorn_server: lanthorn.Server, lanthorn_client: TestClient, peer: StoreSCP) -> None:
    uids = study_of(lanthorn_server, 8)
    [study] = lanthorn_client.get("/studies").json()
    peer.on_store = lambda event: time.sleep(0.3)

    def running_and_started(job: dict[str, Any]) -> bool:
        return job["State"] == "Running" and job["Progress"] > 0

    with peer.running():
        job_id = submit_store(lanthorn_client, study)
        wait_job(lanthorn_client.get, job_id, running_and_started)
        assert lanthorn_client.post(f"/jobs/{job_id}/pause").json() == {}
        paused = wait_job(lanthorn_client.get, job_id, lambda job: job["State"] == "Paused")
        assert 0 < paused["Progress"] < 100
        assert lanthorn_client.post(f"/jobs/{job_id}/resume").json() == {}
        assert wait_job(lanthorn_client.get, job_id)["State"] == "Success"
        assert Counter(r.sop_instance for r in peer.received) == Counter(uids)  # each once

        canceled_id = submit_store(lanthorn_client, study)
        wait_job(lanthorn_client.get, canceled_id, running_and_started)
        lanthorn_client.post(f"/jobs/{canceled_id}/cancel")
        canceled = wait_job(lanthorn_client.get, canceled_id)
    assert (canceled["State"], canceled["ErrorCode"], canceled["ErrorDescription"]) == \
        ("Failure", 37, "This job was canceled")
    assert canceled["Progress"] < 100 and len(peer.received) < 2 * len(uids)


@pytest.mark.lanthorn_config(JobRetryCount=100, JobRetryDelay=60)
def test_the_state_machine_of_a_waiting_job(lanthorn_server: lanthorn.Server,
                                            lanthorn_client: TestClient) -> None:
    study_of(lanthorn_server, 1)
    [study] = lanthorn_client.get("/studies").json()
    job_id = submit_store(lanthorn_client, study)
    wait_job(lanthorn_client.get, job_id, lambda job: job["State"] == "Retry")

    def post(action: str) -> int:
        return lanthorn_client.post(f"/jobs/{job_id}/{action}").status_code

    assert lanthorn_client.delete(f"/jobs/{job_id}").status_code == 400  # not finished
    assert (post("pause"), lanthorn_client.get(f"/jobs/{job_id}").json()["State"]) == \
        (200, "Paused")
    assert post("resubmit") == 400  # only failed jobs are resubmitted
    assert post("resume") == 200
    wait_job(lanthorn_client.get, job_id, lambda job: job["State"] == "Retry")
    assert post("cancel") == 200
    job = lanthorn_client.get(f"/jobs/{job_id}").json()
    assert (job["State"], job["ErrorCode"]) == ("Failure", 37)
    assert (post("resume"), post("cancel"), post("pause")) == (400, 200, 200)
    assert lanthorn_client.get(f"/jobs/{job_id}").json()["State"] == "Failure"
    for method, path in (("GET", "/jobs/nope"), ("POST", "/jobs/nope/cancel"),
                         ("DELETE", "/jobs/nope"), ("GET", f"/jobs/{job_id}/archive")):
        assert lanthorn_client.request(method, path).status_code == 404


class AsksToStop:
    """A job that pauses or cancels itself (``Asks``) at its first progress report, and
    again (``WhileStopping``) while it stops for that."""

    @lanthorn.hookimpl
    def register_job_types(self, server: lanthorn.Server) -> list[lanthorn.JobType]:
        def ask(context: lanthorn.JobContext, key: str) -> None:
            for action in context.parameters[key]:
                getattr(server.jobs, action)(context.id)

        def run(context: lanthorn.JobContext) -> None:
            ask(context, "Asks")
            try:
                context.progress(0.5, force=True)
            except JobInterrupted:
                ask(context, "WhileStopping")
                raise

        return [lanthorn.JobType("AsksToStop", run)]


@pytest.mark.parametrize("asks, while_stopping", [
    (["pause"], ["cancel"]),  # the cancel came in as the job stopped for the pause
    (["cancel", "pause"], []),  # the pause came in after the cancel
], ids=["cancel-while-pausing", "pause-after-cancel"])
@pytest.mark.lanthorn_plugins(AsksToStop())
def test_a_cancel_wins_over_a_pause_of_a_running_job(
        lanthorn_server: lanthorn.Server, lanthorn_client: TestClient, asks: list[str],
        while_stopping: list[str]) -> None:
    job_id = lanthorn_server.jobs.submit("AsksToStop", {"Asks": asks,
                                                        "WhileStopping": while_stopping})
    job = wait_job(lanthorn_client.get, job_id,
                   lambda job: job["State"] not in ("Pending", "Running"))
    assert (job["State"], job["ErrorCode"]) == ("Failure", 37)


def test_without_save_jobs_a_fresh_start_forgets_jobs(
        lanthorn_config: Config, lanthorn_make_server: Callable[..., lanthorn.Server]) -> None:
    def server(save: bool) -> lanthorn.Server:
        started = lanthorn_make_server(lanthorn_config.with_overrides(SaveJobs=save))
        started.start()
        return started

    first = server(save=True)
    study_of(first, 1)
    job_id = first.jobs.submit("Archive", {"Resources": [], "Filename": "a.zip",
                                           "Extended": False})
    first.stop()
    first.close()
    kept = server(save=True)
    assert kept.index.jobs.get(job_id) is not None
    kept.stop()
    kept.close()
    forgotten = server(save=False)
    try:
        assert forgotten.index.jobs.all() == []
    finally:
        forgotten.stop()
        forgotten.close()


@pytest.mark.slow
def test_a_job_of_a_killed_server_is_resumed_by_the_next_one(
        lanthorn_process: ServerProcess, peer: StoreSCP, ct_instance: Any) -> None:
    """``kill -9`` in the middle of a store: the restarted server takes the job over
    once the dead runner's lease expires, and sends again at most what was in flight
    and not yet checkpointed (delivery is at least once)."""
    peer.on_store = lambda event: time.sleep(0.4)
    with httpx2.Client(base_url=lanthorn_process.start().url, timeout=30) as http, \
            peer.running():
        for number in range(8):
            http.post("/instances", content=ct_instance(StudyInstanceUID="1.2.3",
                                                        InstanceNumber=str(number)))
        [study] = http.get("/studies").json()
        job_id = http.post("/modalities/peer/store",
                           json={"Resources": [study], "Asynchronous": True}).json()["ID"]
        wait_job(http.get, job_id, lambda job: job["Progress"] >= 25)
        lanthorn_process.kill()
        sent_before = len(peer.received)
        lanthorn_process.start()
        job = wait_job(http.get, job_id, timeout=60)
    assert job["State"] == "Success", job
    received = Counter(r.sop_instance for r in peer.received)
    assert len(received) == 8 and sum(received.values()) <= 8 + 2, received
    assert 0 < sent_before < 8
