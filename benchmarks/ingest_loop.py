"""Lanthorn's ingest path in-process, without the network: CPU per instance.

Stores a dataset's files with ``server.ingest.store`` (the path of every C-STORE and
upload) one after the other, then again with a pause between instances: sleeping (the
CPU idles, as while a one-at-a-time client sends its next file) and spinning (the CPU
stays busy with something else). Each mode stores its own copy of the dataset. The CPU
of the storing thread alone is counted, never the pause: the difference between the
modes is what starting each instance with cold caches costs, which a server answering
``storescu`` pays on every request (docs/performance.md).

    python benchmarks/ingest_loop.py --dataset small:2x2x2x50 --pause 0.002 --sync
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from generate import Spec

from lanthorn.config import Config
from lanthorn.server import Server
from lanthorn.types import Origin

ORIGIN = Origin("DicomProtocol", "127.0.0.1", "BENCHMARK", "LANTHORN")


def measure(spec: Spec, pause: float, sync: bool, rounds: int,
            folder: Path) -> dict[str, tuple[float, float]]:
    """Per mode: (CPU ms, wall ms) per instance, the pauses left out of both. The modes
    take turns, ``rounds`` times, each with a slice of its own copy of the dataset, so
    that a machine whose speed drifts (a shared VM) weighs on all of them alike."""
    config = Config.defaults().with_overrides(StorageDirectory=str(folder / "storage"),
                                              SyncStorageArea=sync)
    server = Server(config, load_entry_points=False)
    waits: dict[str, Callable[[], None]] = {
        "back to back": lambda: None,
        f"{pause * 1000:g} ms asleep between instances": lambda: time.sleep(pause),
        f"{pause * 1000:g} ms spinning between instances": lambda: _spin(pause),
    }
    copies = {mode: _files(spec, mode) for mode in waits}
    totals = dict.fromkeys(waits, (0.0, 0.0))
    try:
        _store(server, _files(spec, "warm-up"), waits["back to back"])
        for turn in range(rounds):
            for mode, wait in waits.items():
                files = copies[mode][turn::rounds]
                cpu, wall = _store(server, files, wait)
                totals[mode] = (totals[mode][0] + cpu, totals[mode][1] + wall)
    finally:
        server.close()
    count = len(copies["back to back"])
    return {mode: (cpu / count * 1000, wall / count * 1000)
            for mode, (cpu, wall) in totals.items()}


def _files(spec: Spec, seed: str) -> list[bytes]:
    """A copy of the dataset of its own, made before any clock starts."""
    return [data for _, data in spec.with_seed(seed).files()]


def _store(server: Server, files: list[bytes], wait: Callable[[], None]) -> tuple[float, float]:
    """Seconds of CPU (this thread's) and of wall clock spent storing ``files``."""
    cpu = wall = 0.0
    for data in files:
        started, clock = time.thread_time(), time.perf_counter()
        server.ingest.store(data, ORIGIN)
        cpu += time.thread_time() - started
        wall += time.perf_counter() - clock
        wait()
    return cpu, wall


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Spec.parse, default=Spec.parse("small:2x2x2x50"))
    parser.add_argument("--pause", type=float, default=0.002, help="seconds between instances")
    parser.add_argument("--sync", action="store_true", help="SyncStorageArea (flushes)")
    parser.add_argument("--rounds", type=int, default=10, help="turns the modes take")
    parser.add_argument("--workdir", type=Path, default=None, help="where the storage goes")
    parser.add_argument("--json", type=Path, help="write the numbers to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        results = measure(args.dataset, args.pause, args.sync, args.rounds, Path(folder))
    print(f"| mode [{args.dataset}] | CPU ms/instance | wall ms/instance |\n| --- | --- | --- |")
    for mode, (cpu, wall) in results.items():
        print(f"| {mode} | {cpu:.2f} | {wall:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
