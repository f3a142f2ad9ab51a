"""Load: concurrent clients mixing uploads, finds and downloads for a bounded time.

Six clients drive a real ``lanthorn serve`` with two workers over loopback for
LOAD_SECONDS. Uploads go to three shared patients (so clients race to create and
extend the same studies); each find must return every instance of its patient that was
acknowledged before it was sent, from whichever worker answers; each download must be
the bytes uploaded. At the end there were no errors and the statistics count exactly
the acknowledged instances. p50/p99 latencies per operation are printed (``-rA`` shows
them) and recorded as properties (``--junitxml``).
"""

from __future__ import annotations

import hashlib
import random
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from pydicom.uid import generate_uid

from lanthorn.testing import ServerProcess, make_instance

SEED = 20260301
CLIENTS = 6
LOAD_SECONDS = 15.0
PATIENTS = 3
PRELOADED = 12
#: How often each operation is drawn.
MIX = {"upload": 4, "find": 3, "download": 3}


class Load:
    """What the clients share: acknowledged instances, latencies and errors."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.lock = threading.Lock()
        self.studies = [generate_uid() for _ in range(PATIENTS)]
        self.by_patient: dict[int, set[str]] = defaultdict(set)
        self.digests: dict[str, str] = {}
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.deadline = 0.0

    def upload(self, http: httpx2.Client, rng: random.Random) -> None:
        patient = rng.randrange(PATIENTS)
        data = make_instance(rows=32, columns=32, seed=rng.getrandbits(32),
                             PatientID=f"LOAD{patient}", StudyInstanceUID=self.studies[patient])
        response = http.post("/instances", content=data)
        self._expect(response.status_code == 200, "upload", response)
        with self.lock:
            self.by_patient[patient].add(response.json()["ID"])
            self.digests[response.json()["ID"]] = hashlib.md5(data).hexdigest()

    def find(self, http: httpx2.Client, rng: random.Random) -> None:
        patient = rng.randrange(PATIENTS)
        with self.lock:
            acknowledged = set(self.by_patient[patient])
        response = http.post("/tools/find", json={"Level": "Instance",
                                                  "Query": {"PatientID": f"LOAD{patient}"}})
        self._expect(response.status_code == 200, "find", response)
        missing = acknowledged - set(response.json())
        self._expect(not missing, f"find missed {len(missing)} acknowledged", response)

    def download(self, http: httpx2.Client, rng: random.Random) -> None:
        with self.lock:
            public_id, digest = rng.choice(sorted(self.digests.items()))
        response = http.get(f"/instances/{public_id}/file")
        self._expect(response.status_code == 200, "download", response)
        self._expect(hashlib.md5(response.content).hexdigest() == digest, "bytes", response)

    def _expect(self, condition: bool, what: str, response: httpx2.Response) -> None:
        if not condition:
            raise AssertionError(f"{what}: HTTP {response.status_code} {response.text[:200]}")

    def client(self, number: int) -> None:
        rng = random.Random(SEED + number)
        operations: dict[str, Callable[[httpx2.Client, random.Random], None]] = {
            "upload": self.upload, "find": self.find, "download": self.download}
        with httpx2.Client(base_url=self.server.url, timeout=30) as http:
            while time.monotonic() < self.deadline:
                name = rng.choices(list(MIX), weights=list(MIX.values()))[0]
                started = time.perf_counter()
                try:
                    operations[name](http, rng)
                except (AssertionError, httpx2.HTTPError) as exc:
                    with self.lock:
                        self.errors.append(f"{name}: {exc}")
                    return
                with self.lock:
                    self.latencies[name].append(time.perf_counter() - started)

    def run(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        threads = [threading.Thread(target=self.client, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + 60)


def _report(load: Load, record_property: Callable[[str, Any], None]) -> None:
    """p50/p99 per operation, printed and recorded."""
    print(f"\n{CLIENTS} clients for {LOAD_SECONDS:.0f} s against 2 workers:")
    for name, latencies in sorted(load.latencies.items()):
        p50, p99 = statistics.median(latencies), statistics.quantiles(latencies, n=100)[98]
        print(f"  {name:9} {len(latencies):6} requests  p50 {p50 * 1000:7.1f} ms  "
              f"p99 {p99 * 1000:7.1f} ms")
        record_property(f"{name}_count", len(latencies))
        record_property(f"{name}_p50_ms", round(p50 * 1000, 1))
        record_property(f"{name}_p99_ms", round(p99 * 1000, 1))


@pytest.mark.slow
def test_mixed_load_has_no_errors_and_consistent_counts(
        lanthorn_process: ServerProcess, record_property: Callable[[str, Any], None]) -> None:
    lanthorn_process.extra_args = ["--workers", "2"]
    load = Load(lanthorn_process.start())
    with httpx2.Client(base_url=lanthorn_process.url, timeout=30) as http:
        rng = random.Random(SEED)
        for _ in range(PRELOADED):  # something to find and download from the start
            load.upload(http, rng)
        load.run(LOAD_SECONDS)
        assert load.errors == []
        assert all(len(load.latencies[name]) >= 20 for name in MIX), load.latencies.keys()
        statistics_now = http.get("/statistics").json()
        assert statistics_now["CountInstances"] == len(load.digests)
        assert statistics_now["CountPatients"] == PATIENTS
        assert statistics_now["CountStudies"] == PATIENTS
        assert sorted(http.get("/instances").json()) == sorted(load.digests)
    _report(load, record_property)
