"""Several Lanthorn processes on one PostgreSQL database, sharing no filesystem: one
resource per UID under concurrent ingest, one global change log, stable events once
per cluster, and every file readable from every node."""

from __future__ import annotations

import importlib.util
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest

from lanthorn.testing import ServerProcess, free_port, make_instance, missing

if importlib.util.find_spec("lanthorn_postgres") is None:  # skipped, or failed under CI
    missing("lanthorn-postgres is not installed (pip install -e plugins/postgres)")


RECORDER = Path(__file__).with_name("recorder.py")
STUDY = "1.2.826.0.1.3680043.10.77"
SERIES = [f"{STUDY}.1", f"{STUDY}.2"]
PER_NODE = 30


def _wait(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


@pytest.fixture
def nodes(tmp_path: Path, postgres_section: dict[str, Any]) -> Iterator[list[ServerProcess]]:
    """Two ``lanthorn serve`` processes on one database, each with its own folder."""
    started: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            config = {
                "StorageDirectory": str(tmp_path / name), "StableAge": 2,
                "HttpPort": free_port(), "DicomPort": free_port(),
                "HttpBindAddress": "127.0.0.1", "DicomBindAddress": "127.0.0.1",
                "PostgreSQL": {**postgres_section, "EnableStorage": True},
                "Plugins": [str(RECORDER)], "Recorder": {"Path": str(tmp_path / "events")},
            }
            path = tmp_path / f"{name}.json"
            path.write_text(json.dumps(config))
            started.append(ServerProcess(path, config["HttpPort"], config["DicomPort"],
                                         tmp_path / f"{name}.log").start())
        yield started
    finally:
        for node in started:
            node.kill_group()


@pytest.mark.slow
def test_two_nodes_ingesting_one_study_make_one_of_each_and_lose_nothing(
        nodes: list[ServerProcess], tmp_path: Path) -> None:
    uploads = [[make_instance(PatientID="CLUSTER", StudyInstanceUID=STUDY,
                              SeriesInstanceUID=SERIES[n % 2], InstanceNumber=n)
                for n in range(PER_NODE)] for _ in nodes]
    clients = [httpx2.Client(base_url=node.url, timeout=60) for node in nodes]
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda job: clients[job[0]].post("/instances",
                                                                     content=job[1]),
                                    [(i, data) for pair in zip(*uploads, strict=True)
                                     for i, data in enumerate(pair)]))
        assert [a.status_code for a in answers] == [200] * 2 * PER_NODE
        for client in clients:
            statistics = client.get("/statistics").json()
            assert (statistics["CountPatients"], statistics["CountStudies"],
                    statistics["CountSeries"], statistics["CountInstances"]) == \
                (1, 1, 2, 2 * PER_NODE)
        # No shared filesystem: a file received by one node is served by the other.
        for answer, data in zip(answers, [d for pair in zip(*uploads, strict=True)
                                          for d in pair], strict=True):
            for client in clients:
                assert client.get(f"/instances/{answer.json()['ID']}/file").content == data

        def changes(client: httpx2.Client) -> list[dict[str, Any]]:
            return client.get("/changes?limit=10000").json()["Changes"]

        assert changes(clients[0]) == changes(clients[1])  # one global change log
        kinds = Counter(c["ChangeType"] for c in changes(clients[0]))
        assert (kinds["NewPatient"], kinds["NewStudy"], kinds["NewSeries"],
                kinds["NewInstance"]) == (1, 1, 2, 2 * PER_NODE)

        events = tmp_path / "events"

        def delivered() -> Counter[str]:
            lines = events.read_text().split("\n")[:-1] if events.exists() else []
            return Counter(line.split()[2] for line in lines)

        stable = Counter(StableSeries=2, StableStudy=1, StablePatient=1)
        _wait(lambda: delivered() & stable == stable)
        time.sleep(3)  # both nodes had time to (wrongly) fire them again
        assert delivered() & Counter(dict.fromkeys(stable, 99)) == stable
        seqs = [line.split()[1] for line in events.read_text().splitlines()]
        assert len(seqs) == len(set(seqs)), "a change was delivered twice"
        assert len(seqs) == len(changes(clients[0]))
    finally:
        for client in clients:
            client.close()
