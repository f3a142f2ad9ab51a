"""Where an ingest's instructions go: pydicom reading a file, pydicom converting every
element (what rendering ``/tags`` adds; ingest no longer does), Lanthorn's parsing, the
main tags, the whole in-process ingest.

Each stage runs in a process of its own under ``perf stat -e instructions:u`` (Debian's
linux-perf) or, with ``--counter callgrind`` where perf counts nothing (most VMs here),
under valgrind's callgrind (some fifty times slower, the same counts for the same work),
once over ``--count`` files and once over ``--base`` files; the difference,
divided by the difference in files, is the stage's cost per instance without the
interpreter's start-up and imports. Unlike times, instruction counts hardly move from
run to run on a shared VM, so the stages can be compared with each other and with
another server's count per instance (``run.py``'s "server instructions" rows).

    python benchmarks/ingest_instructions.py --dataset small:2x2x2x100
    python benchmarks/ingest_instructions.py --dataset small:1x1x1x60 --base 20 --counter callgrind
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pydicom
from generate import Spec

from lanthorn.config import Config
from lanthorn.dicom import main_tag_values, parse_instance
from lanthorn.model import MainTags
from lanthorn.server import Server
from lanthorn.types import Origin

ORIGIN = Origin("DicomProtocol", "127.0.0.1", "BENCHMARK", "LANTHORN")


def _read(data: bytes) -> None:
    pydicom.dcmread(io.BytesIO(data))


def _read_and_convert(data: bytes) -> None:
    for _ in pydicom.dcmread(io.BytesIO(data)).iterall():  # converts every element
        pass


def _parse(data: bytes) -> None:
    parse_instance(data)


def _parse_and_main_tags(data: bytes) -> None:
    main_tag_values(parse_instance(data).dataset, MainTags())


STAGES: dict[str, Callable[[bytes], None] | None] = {
    "files only (the harness)": lambda data: None,
    "pydicom dcmread": _read,
    "dcmread, every element converted": _read_and_convert,
    "lanthorn parse_instance": _parse,
    "parse_instance and main tags": _parse_and_main_tags,
    "Ingester.store, no flushes": None,  # needs a server: see _run_stage
}


def _run_stage(stage: str, folder: Path, count: int) -> None:
    """The child process: ``stage`` over the first ``count`` files of ``folder``."""
    files = [path.read_bytes() for path in sorted(folder.iterdir())[:count]]
    work = STAGES[stage]
    if work is not None:
        for data in files:
            work(data)
        return
    with tempfile.TemporaryDirectory() as storage:
        config = Config.defaults().with_overrides(StorageDirectory=storage,
                                                  SyncStorageArea=False)
        server = Server(config, load_entry_points=False)
        try:
            for data in files:
                server.ingest.store(data, ORIGIN)
        finally:
            server.close()


#: How each counter runs a command, and where in its report (standard error) the count is.
COUNTERS = {
    "perf": (["perf", "stat", "-x", ",", "-e", "instructions:u"],
             re.compile(r"^(\d+),[^\n]*instructions", re.MULTILINE)),
    "callgrind": (["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"],
                  re.compile(r"Collected : (\d+)")),
}


def _instructions(stage: str, folder: Path, count: int, counter: str) -> int:
    """User-space instructions of a child process running ``stage`` over ``count`` files."""
    prefix, report = COUNTERS[counter]
    command = [*prefix, sys.executable, __file__,
               "--stage", stage, "--folder", str(folder), "--count", str(count)]
    # A fixed string hash: with a random one, dictionaries probe differently from run to
    # run, and the same work's count moved by 0.5%.
    result = subprocess.run(command, capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONHASHSEED": "0"})
    found = report.search(result.stderr)
    if found is None:
        raise SystemExit(f"{counter} reported no count: {result.stderr[-300:]}")
    return int(found.group(1))


def measure(spec: Spec, base: int, folder: Path, counter: str) -> dict[str, float]:
    """Millions of instructions per instance, per stage."""
    files = [data for _, data in spec.with_seed("instructions").files()]
    for number, data in enumerate(files):
        (folder / f"{number:06d}.dcm").write_bytes(data)
    count = len(files)
    if count <= base:
        raise SystemExit(f"the dataset has {count} files: more than --base ({base}) are needed")
    return {stage: (_instructions(stage, folder, count, counter)
                    - _instructions(stage, folder, base, counter)) / (count - base) / 1e6
            for stage in STAGES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Spec.parse, default=Spec.parse("small:2x2x2x100"))
    parser.add_argument("--base", type=int, default=100, help="files of the reference run")
    parser.add_argument("--counter", choices=COUNTERS, default="perf",
                        help="perf stat, or valgrind's callgrind where perf counts nothing")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        _run_stage(args.stage, args.folder, args.count)
        return
    with tempfile.TemporaryDirectory() as folder:
        results = measure(args.dataset, args.base, Path(folder), args.counter)
    print(f"| stage [{args.dataset}] | M instructions/instance |\n| --- | --- |")
    for stage, millions in results.items():
        print(f"| {stage} | {millions:.2f} |")


if __name__ == "__main__":
    main()
