"""Crash safety: ``kill -9`` during concurrent uploads loses no acknowledged instance.

A real ``lanthorn serve`` (one process, then a supervisor with two workers) takes
uploads over REST and C-STORE at once. In each round its whole process group is killed
at a point drawn from a fixed seed while uploads of both kinds are in flight, then it
is restarted: every instance acknowledged in any round so far (HTTP 200, DIMSE status
0x0000) must be present and byte-identical, and no index row may lack its file. After a
clean stop at the end, ``lanthorn check --repair`` must leave a consistent store.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.association import Association

from conftest import StoreScu, split_file_meta
from lanthorn import changes, jobs
from lanthorn.config import Config
from lanthorn.model import public_ids
from lanthorn.server import Server
from lanthorn.testing import CT_IMAGE_STORAGE, ServerProcess, make_instance

SEED = 20260301
#: Worker processes in each round: a single process, then a supervisor with two.
ROUNDS = (1, 2, 2)
REST_CLIENTS = 3
DICOM_CLIENTS = 2
REST, DICOM = "REST", "C-STORE"


def _digest(data: bytes, kind: str) -> str:
    """MD5 of what must come back: the whole file over REST, the data set over C-STORE
    (the file meta information of a C-STORE is the receiver's own)."""
    return hashlib.md5(data if kind == REST else data[split_file_meta(data)[1]:]).hexdigest()


class Traffic:
    """REST and C-STORE clients uploading distinct instances until the server dies."""

    def __init__(self, server: ServerProcess, store_scu: StoreScu, folder: Path,
                 label: str) -> None:
        self.server, self.store_scu, self.folder, self.label = server, store_scu, folder, label
        self.lock = threading.Lock()
        self.in_flight: Counter[str] = Counter()
        self.acknowledged: dict[str, tuple[str, str]] = {}  # public ID -> (kind, MD5)
        self.failures: list[str] = []  # answers other than success or a dead server
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._rest, args=(n,))
                        for n in range(REST_CLIENTS)]
        self.threads += [threading.Thread(target=self._dicom, args=(n,))
                         for n in range(DICOM_CLIENTS)]

    def _instance(self, kind: str, client: int, number: int) -> tuple[bytes, str]:
        """A new instance and its public ID (computed as Orthanc does, from its UIDs)."""
        uids = (f"{self.label}-{kind}{client}", generate_uid(), generate_uid(), generate_uid())
        data = make_instance(rows=64, columns=64, seed=number, PatientID=uids[0],
                             StudyInstanceUID=uids[1], SeriesInstanceUID=uids[2],
                             SOPInstanceUID=uids[3], InstanceNumber=number)
        return data, public_ids(uids)[3]

    @contextmanager
    def _sending(self, kind: str) -> Iterator[None]:
        with self.lock:
            self.in_flight[kind] += 1
        try:
            yield
        finally:
            with self.lock:
                self.in_flight[kind] -= 1

    def _answered(self, kind: str, public_id: str, data: bytes, success: bool,
                  answer: object) -> bool:
        """Record an answer; False once the client should stop."""
        with self.lock:
            if success:
                self.acknowledged[public_id] = (kind, _digest(data, kind))
            else:
                self.failures.append(f"{kind}: {answer}")
        return success and not self.stop.is_set()

    def _rest(self, client: int) -> None:
        with httpx2.Client(base_url=self.server.url, timeout=30) as http:
            for number in itertools.count():
                data, public_id = self._instance(REST, client, number)
                try:
                    with self._sending(REST):
                        response = http.post("/instances", content=data)
                except httpx2.HTTPError:
                    return  # the server died under us: this one was never acknowledged
                success = response.status_code == 200 and response.json()["ID"] == public_id
                if not self._answered(REST, public_id, data, success, response.text):
                    return

    def _dicom(self, client: int) -> None:
        association = self.store_scu(self.server.dicom_port,
                                     (CT_IMAGE_STORAGE, ExplicitVRLittleEndian))
        path = self.folder / f"{self.label}-{client}.dcm"
        for number in itertools.count():
            data, public_id = self._instance(DICOM, client, number)
            path.write_bytes(data)
            with self._sending(DICOM):
                status = _send(association, path)
            if status is None:
                return  # the association died with the server: never acknowledged
            if not self._answered(DICOM, public_id, data, status == 0x0000, hex(status)):
                return

    def acknowledged_by_kind(self) -> Counter[str]:
        with self.lock:
            return Counter(kind for kind, _ in self.acknowledged.values())

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def _send(association: Association, path: Path) -> int | None:
    """The C-STORE status, or None when the association is gone."""
    try:
        return association.send_c_store(path).get("Status")
    except RuntimeError:  # pynetdicom: the association is no longer established
        return None


def _crash(server: ServerProcess, traffic: Traffic, rng: random.Random) -> None:
    """``kill -9`` once a drawn number of uploads of each kind succeeded, plus a drawn
    pause, at a moment when uploads of both kinds are in flight."""
    goal, pause = rng.randint(5, 30), rng.uniform(0, 0.3)
    deadline = time.monotonic() + 40
    while min(traffic.acknowledged_by_kind()[kind] for kind in (REST, DICOM)) < goal:
        assert time.monotonic() < deadline, f"uploads did not progress: {traffic.failures}"
        time.sleep(0.005)
    time.sleep(pause)
    while True:
        with traffic.lock:  # holds the in-flight counts still while the processes die
            if traffic.in_flight[REST] and traffic.in_flight[DICOM]:
                server.kill_group()
                return
        assert time.monotonic() < deadline, f"uploads stalled: {traffic.failures}"
        time.sleep(0.001)


def _assert_intact(server: ServerProcess, acknowledged: dict[str, tuple[str, str]]) -> None:
    with httpx2.Client(base_url=server.url, timeout=30) as http:
        for public_id, (kind, digest) in acknowledged.items():
            response = http.get(f"/instances/{public_id}/file")
            assert response.status_code == 200, f"{kind} instance {public_id} was lost"
            assert _digest(response.content, kind) == digest, f"{kind} {public_id} changed"
    report = server.cli("check")
    assert "missing files: 0" in report.stdout, report.stdout + report.stderr
    assert "bad checksums: 0" in report.stdout, report.stdout + report.stderr


def _wait_for_dead_leases(server: Server) -> None:
    """Wait until the leases of the killed processes expire.

    Until then ``check`` must take their holders for live servers and spare recent
    orphans: a repair would leave them, for a later check (past the expiry) to find.
    """
    deadline = time.monotonic() + max(changes.LEASE_SECONDS, jobs.LEASE_SECONDS) + 30
    while holders := server.index.live_lease_holders():
        assert time.monotonic() < deadline, f"leases outlived their holders: {holders}"
        time.sleep(0.05)


@pytest.mark.slow
def test_kill_9_during_rest_and_dicom_uploads_loses_no_acknowledged_instance(
        lanthorn_process: ServerProcess, store_scu: StoreScu, tmp_path: Path,
        lanthorn_config: Config, lanthorn_make_server: Callable[[Config], Server]) -> None:
    rng = random.Random(SEED)
    acknowledged: dict[str, tuple[str, str]] = {}
    for number, workers in enumerate(ROUNDS):
        lanthorn_process.extra_args = ["--workers", str(workers)]
        _assert_intact(lanthorn_process.start(), acknowledged)
        assert len(lanthorn_process.workers()) == (workers if workers > 1 else 0)
        with Traffic(lanthorn_process, store_scu, tmp_path, f"ROUND{number}") as traffic:
            _crash(lanthorn_process, traffic, rng)
        assert traffic.failures == []
        acknowledged |= traffic.acknowledged

    _assert_intact(lanthorn_process.start(), acknowledged)
    assert lanthorn_process.stop() == 0
    index = lanthorn_make_server(lanthorn_config)
    try:
        _wait_for_dead_leases(index)
    finally:
        index.close()
    repaired = lanthorn_process.cli("check", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "A server or import is running" not in repaired.stdout, repaired.stdout
    clean = lanthorn_process.cli("check")
    assert clean.returncode == 0, clean.stdout + clean.stderr

