"""REST ingest throughput: POST /instances from N concurrent clients.

Works against any server with Orthanc's REST API (Lanthorn or Orthanc itself):

    python benchmarks/ingest_rest.py --url http://127.0.0.1:8042 --profile ct --clients 1 4

Profiles: ``ct`` is 512x512 16-bit (about 0.5 MB a file), ``small`` is 64x64 (about
10 KB). Files are generated before the clock starts; every run uploads new instances.
Prints instances/s and MB/s per client count, median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid

import httpx2

from lanthorn.testing import make_instance

PROFILES = {"ct": 512, "small": 64}


def generate(count: int, size: int, label: str) -> list[bytes]:
    study = f"BENCH-{label}"
    return [make_instance(rows=size, columns=size, seed=n, PatientID=study,
                          InstanceNumber=n) for n in range(count)]


def upload(url: str, files: list[bytes], clients: int) -> float:
    """Seconds taken to upload every file, split between ``clients`` threads."""
    errors: list[str] = []

    def worker(chunk: list[bytes]) -> None:
        with httpx2.Client(base_url=url, timeout=120) as http:
            for data in chunk:
                response = http.post("/instances", content=data)
                if response.status_code != 200:
                    errors.append(response.text)

    threads = [threading.Thread(target=worker, args=(files[n::clients],))
               for n in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise SystemExit(f"{len(errors)} uploads failed, first: {errors[0][:300]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8042")
    parser.add_argument("--profile", choices=PROFILES, default="ct")
    parser.add_argument("--count", type=int, default=400, help="instances per run")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size = PROFILES[args.profile]
    for clients in args.clients:
        rates = []
        for _ in range(args.repeat):
            files = generate(args.count, size, uuid.uuid4().hex[:8])
            megabytes = sum(map(len, files)) / 1e6
            elapsed = upload(args.url, files, clients)
            rates.append((args.count / elapsed, megabytes / elapsed))
        per_second = [r[0] for r in rates]
        print(f"{args.profile:>5} clients={clients}: "
              f"{statistics.median(per_second):7.1f} instances/s "
              f"(min {min(per_second):.1f}, max {max(per_second):.1f}), "
              f"{statistics.median(r[1] for r in rates):6.1f} MB/s")


if __name__ == "__main__":
    main()
