"""``lanthorn serve --workers 2``: processes share the ports and the index like nodes of a
cluster; background duties run once; a dead worker is replaced."""

from __future__ import annotations

import io
import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from lanthorn.testing import ServerProcess, make_instance

pytestmark = pytest.mark.all_index_backends


def _wait(condition, timeout: float = 20) -> None:  # noqa: ANN001 - a predicate
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.fixture
def cluster(lanthorn_process: ServerProcess) -> ServerProcess:
    lanthorn_process.extra_args = ["--workers", "2"]
    return lanthorn_process.start()


@pytest.mark.slow
def test_two_workers_share_ingest_and_fire_stable_events_once(cluster: ServerProcess) -> None:
    assert len(cluster.workers()) == 2
    series = ["1.2.826.0.1.3680043.10.1", "1.2.826.0.1.3680043.10.2"]
    uploads = [make_instance(PatientID="W", StudyInstanceUID="1.2.826.0.1.3680043.10",
                             SeriesInstanceUID=series[n % 2], InstanceNumber=n)
               for n in range(40)]
    with httpx2.Client(base_url=cluster.url, timeout=30) as http, \
            ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda d: http.post("/instances", content=d).status_code,
                                 uploads))
        assert statuses == [200] * 40
        assert http.get("/statistics").json()["CountInstances"] == 40

        def stable_changes() -> Counter[str]:
            changes = http.get("/changes?limit=1000").json()["Changes"]
            return Counter(c["ChangeType"] for c in changes if c["ChangeType"].startswith("Stable"))

        _wait(lambda: stable_changes() == Counter(StableSeries=2, StableStudy=1, StablePatient=1))
        time.sleep(2)  # both processes had time to (wrongly) fire them again
        assert stable_changes() == Counter(StableSeries=2, StableStudy=1, StablePatient=1)


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_sigterm_stops_all(cluster: ServerProcess) -> None:
    first, second = cluster.workers()
    os.kill(first, signal.SIGKILL)
    _wait(lambda: len(cluster.workers()) == 2 and first not in cluster.workers())
    with httpx2.Client(base_url=cluster.url, timeout=30) as http:
        for _ in range(10):  # whichever process answers, the service is whole
            assert http.post("/instances", content=make_instance()).status_code == 200
    assert cluster.stop() == 0
    assert not Path(f"/proc/{second}").exists() or "zombie" in Path(
        f"/proc/{second}/status").read_text()


@pytest.mark.slow
def test_workers_die_with_a_killed_supervisor(cluster: ServerProcess) -> None:
    workers = cluster.workers()
    cluster.kill()
    _wait(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers))


@pytest.mark.slow
def test_workers_take_associations_from_one_dicom_port(cluster: ServerProcess) -> None:
    """The supervisor binds the DICOM port once and every worker accepts on it (the one
    with fewer connections first): four associations at once all store."""
    instances = [make_instance(PatientID=f"DICOM{n}") for n in range(8)]

    def send(files: list[bytes]) -> list[int]:
        ae = AE("PYSCU")
        ae.add_requested_context(CTImageStorage)
        association = ae.associate("127.0.0.1", cluster.dicom_port, ae_title="LANTHORN")
        assert association.is_established
        try:
            return [association.send_c_store(dcmread(io.BytesIO(f))).Status for f in files]
        finally:
            association.release()

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(send, [instances[n::4] for n in range(4)]))
    assert statuses == [[0, 0]] * 4
    with httpx2.Client(base_url=cluster.url, timeout=30) as http:
        assert http.get("/statistics").json()["CountInstances"] == 8
