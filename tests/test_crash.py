"""Crash safety: ``kill -9`` during concurrent uploads loses no acknowledged instance.

A real ``lanthorn serve`` process takes uploads from four clients; it is killed while
uploads are verifiably in flight, then restarted. Every instance that got a 200 must
be present and byte-identical, no index row may lack its file, and ``lanthorn check
--repair`` must clean whatever orphan files the crash left.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time

import httpx2
import pytest

from lanthorn.testing import ServerProcess, make_instance

CLIENTS = 4
ACKNOWLEDGED_BEFORE_KILL = 60


class Uploader:
    """Four clients posting distinct instances until told to stop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.acknowledged: dict[str, str] = {}  # public ID -> MD5 of the bytes sent
        self.in_flight = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(CLIENTS)]

    def _run(self, client: int) -> None:
        with httpx2.Client(base_url=self.url, timeout=30) as http:
            for number in range(100_000):
                if self.stop.is_set():
                    return
                data = make_instance(rows=64, columns=64, seed=number,
                                     PatientID=f"CRASH{client}", InstanceNumber=number)
                with self.lock:
                    self.in_flight += 1
                try:
                    response = http.post("/instances", content=data)
                except httpx2.HTTPError:
                    return  # the server died under us: this one was never acknowledged
                finally:
                    with self.lock:
                        self.in_flight -= 1
                if response.status_code == 200:
                    with self.lock:
                        self.acknowledged[response.json()["ID"]] = hashlib.md5(data).hexdigest()

    def __enter__(self) -> Uploader:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def _kill_while_uploading(server: ServerProcess) -> dict[str, str]:
    with Uploader(server.url) as uploads:
        deadline = time.monotonic() + 60
        while len(uploads.acknowledged) < ACKNOWLEDGED_BEFORE_KILL or uploads.in_flight == 0:
            assert time.monotonic() < deadline, "uploads did not progress"
            time.sleep(0.005)
        with uploads.lock:  # hold acknowledgements still while the process dies
            assert uploads.in_flight > 0
            server.kill()
            acknowledged = dict(uploads.acknowledged)
    return acknowledged


def _lanthorn(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lanthorn", *args, "--config",
                           str(server.config_path)], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_kill_9_during_uploads_loses_no_acknowledged_instance(
        lanthorn_process: ServerProcess) -> None:
    acknowledged = _kill_while_uploading(lanthorn_process.start())
    assert len(acknowledged) >= ACKNOWLEDGED_BEFORE_KILL

    lanthorn_process.start()
    with httpx2.Client(base_url=lanthorn_process.url, timeout=30) as http:
        for public_id, md5 in acknowledged.items():
            response = http.get(f"/instances/{public_id}/file")
            assert response.status_code == 200, public_id
            assert hashlib.md5(response.content).hexdigest() == md5
    assert lanthorn_process.stop() == 0

    report = _lanthorn(lanthorn_process, "check")
    assert "missing files: 0" in report.stdout, report.stdout + report.stderr
    assert "bad checksums: 0" in report.stdout, report.stdout + report.stderr
    repaired = _lanthorn(lanthorn_process, "check", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    clean = _lanthorn(lanthorn_process, "check")
    assert clean.returncode == 0, clean.stdout + clean.stderr
