"""How ingest and find scale with the size of the index, on SQLite and on PostgreSQL.

For each backend, starts ``lanthorn serve`` in a temporary folder (PostgreSQL: on a
throwaway database, dropped at the end), then ingests small instances (64×64, ~9 KB)
in steps of ``--step`` up to ``--total``, from ``--clients`` parallel REST clients. After
each step it records the step's instances/s and the median and p90 latency of
``--calls`` study-level ``/tools/find`` calls by PatientName wildcard and by StudyDate
range (each answer checked, as in run.py). As wall-clock rates on a shared machine follow
the load, each step also records the CPU milliseconds per instance and per find of the
server process (and its children) plus, on PostgreSQL, the database's server processes
(read from ``/proc``: Linux only), and the load average.

    python benchmarks/index_scaling.py --total 200000 --step 10000 --json scaling.json

Needs the test extras and, for PostgreSQL, the plugin (``pip install -e plugins/postgres``)
and a server reachable at ``--postgres`` (a role allowed to create databases).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx2
from generate import Spec
from run import (
    QUERIES,
    BenchmarkError,
    Target,
    _rest_asker,
    _split,
    _time_query,
    _timed,
    cpu_seconds,
    markdown_table,
    number,
    process_tree,
)
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from lanthorn.testing import ServerProcess, free_port

BACKENDS = ("sqlite", "postgresql")
FIND_KINDS = ("study by PatientName wildcard", "study by StudyDate range")
#: Each step is this shape, repeated: 2 studies of 2 series of 5 instances per patient.
STUDIES, SERIES, INSTANCES = 2, 2, 5
PER_PATIENT = STUDIES * SERIES * INSTANCES


@dataclass
class StepResult:
    instances: int  # in the index after the step
    ingest_per_second: float
    server_cpu_ms: float  # CPU milliseconds of the server per ingested instance
    database_cpu_ms: float | None  # and of PostgreSQL's processes (None on SQLite)
    load_average: float  # 1-minute load average at the end of the step's ingest
    find_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # kind: median, p90


def measure_backend(backend: str, args: argparse.Namespace,
                    results: list[StepResult], save: Callable[[], None]) -> None:
    """Start a server on ``backend``, ingest step by step, time finds after each step;
    ``save`` after each step keeps what a long run measured before it is interrupted."""
    with tempfile.TemporaryDirectory(prefix="lanthorn-scaling-") as folder, \
            _database(backend, args.postgres) as section:
        server = _start(Path(folder), section)
        try:
            target = Target(server.url)
            assert server.process is not None
            server_cpu = _CpuClock(partial(process_tree, server.process.pid))
            database_cpu = _CpuClock(partial(_database_pids, section)) if section else None
            loaded: list[Spec] = []
            for number_ in range(args.total // args.step):
                spec = Spec("small", args.step // PER_PATIENT, STUDIES, SERIES, INSTANCES,
                            seed=f"{args.seed}/{backend}/{number_}")
                server_cpu.lap()
                if database_cpu:
                    database_cpu.lap()
                rate = _ingest(target, spec, args.clients)
                result = StepResult(
                    (number_ + 1) * spec.count, rate, server_cpu.lap() * 1000 / spec.count,
                    database_cpu.lap() * 1000 / spec.count if database_cpu else None,
                    os.getloadavg()[0])
                loaded.append(spec)
                _check_count(target, result.instances)
                result.find_ms = _find_latencies(target, loaded, args.calls, args.seed,
                                                 args.find_limit,
                                                 [c for c in (server_cpu, database_cpu) if c])
                results.append(result)
                save()
                print(f"{backend} {result.instances:>8}: {rate:7.1f} inst/s, "
                      f"server {result.server_cpu_ms:.2f} CPU ms/inst, "
                      f"database {result.database_cpu_ms or 0:.2f} CPU ms/inst, "
                      f"load {result.load_average:.1f}, "
                      + ", ".join(f"{k} {v['median']:.1f} ms ({v['cpu']:.1f} CPU ms)"
                                  for k, v in result.find_ms.items()),
                      file=sys.stderr, flush=True)
        except BaseException:
            print(f"--- the server's log ({backend}):\n{server.log_path.read_text()[-6000:]}",
                  file=sys.stderr)
            raise
        finally:
            server.stop()


@contextmanager
def _database(backend: str, admin_dsn: str) -> Iterator[dict[str, Any] | None]:
    """The ``"PostgreSQL"`` section of a throwaway database, or None for SQLite."""
    if backend == "sqlite":
        yield None
        return
    admin = make_url(admin_dsn).set(drivername="postgresql+psycopg")
    name = f"lanthorn_scaling_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with engine.connect() as conn:
        if conn.scalar(text("SHOW autovacuum")) != "on":
            raise SystemExit("PostgreSQL runs with autovacuum off: its planner would work "
                             "without statistics, which no production server does; turn it "
                             "on (ALTER SYSTEM SET autovacuum = on; SELECT pg_reload_conf())")
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield {"EnableIndex": True, "ConnectionUri":
               admin.set(database=name).render_as_string(hide_password=False)}
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


class _CpuClock:
    """CPU seconds (user + system) spent by a changing set of processes between laps.

    Each process is charged from the first lap that sees it; a process that exits between
    laps loses its last interval (PostgreSQL backends of the pool live as long as it).
    """

    def __init__(self, pids: Callable[[], Iterable[int]]) -> None:
        self._pids = pids
        self._seen: dict[int, float] = {}

    def lap(self) -> float:
        now = {pid: seconds for pid in self._pids()
               if (seconds := cpu_seconds(pid)) is not None}
        spent = sum(seconds - self._seen.get(pid, seconds) for pid, seconds in now.items())
        self._seen = now
        return spent


def _database_pids(section: dict[str, Any]) -> list[int]:
    """The PostgreSQL server processes serving the benchmark's database."""
    url = make_url(section["ConnectionUri"])
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = :name "
                "AND pid <> pg_backend_pid()"), {"name": url.database}).scalars())
    finally:
        engine.dispose()


def _start(folder: Path, section: dict[str, Any] | None) -> ServerProcess:
    http, dicom = free_port(), free_port()
    config: dict[str, Any] = {"StorageDirectory": str(folder / "storage"), "HttpPort": http,
                              "DicomPort": dicom, "HttpBindAddress": "127.0.0.1",
                              "DicomBindAddress": "127.0.0.1"}
    if section:
        config["PostgreSQL"] = section
    path = folder / "lanthorn.json"
    path.write_text(json.dumps(config))
    return ServerProcess(path, http, dicom, folder / "server.log").start(timeout=120)


def _ingest(target: Target, spec: Spec, clients: int) -> float:
    """Instances/s to POST the dataset (made in memory before the clock starts)."""
    files = [data for _, data in spec.files()]

    def send(part: Sequence[bytes]) -> None:
        with httpx2.Client(base_url=target.url, timeout=120) as http:
            for data in part:
                response = http.post("/instances", content=data)
                if response.status_code != 200:
                    raise BenchmarkError(f"POST /instances: {response.status_code}")

    seconds, _ = _timed(send, _split(files, clients))
    return len(files) / seconds


def _check_count(target: Target, expected: int) -> None:
    count = httpx2.get(target.url + "/statistics", timeout=60).json()["CountInstances"]
    if count != expected:
        raise BenchmarkError(f"the index holds {count} instances, expected {expected}")


def _find_latencies(target: Target, loaded: list[Spec], calls: int, seed: str, limit: int,
                    clocks: list[_CpuClock]) -> dict[str, dict[str, float]]:
    """Median and p90 (ms) of random queries about any of the datasets loaded so far,
    and the CPU ms per query of the server and the database (``cpu``)."""
    rng = random.Random(f"{seed}/find/{len(loaded)}")
    found: dict[str, dict[str, float]] = {}
    with _rest_asker(target, limit) as ask:
        for kind in FIND_KINDS:
            times = []
            for clock in clocks:
                clock.lap()
            for _ in range(calls):
                spec = rng.choice(loaded)
                key = (rng.randrange(spec.patients), rng.randrange(spec.studies), 0, 0)
                times.append(_time_query(ask, QUERIES[kind](spec, key)))
            found[kind] = {"median": statistics.median(times),
                           "p90": statistics.quantiles(times, n=10, method="inclusive")[8],
                           "cpu": sum(clock.lap() for clock in clocks) * 1000 / calls}
    return found


def table(results: dict[str, list[StepResult]]) -> str:
    rows = [[backend, str(r.instances), number(r.ingest_per_second), f"{r.server_cpu_ms:.2f}",
             "" if r.database_cpu_ms is None else f"{r.database_cpu_ms:.2f}",
             f"{r.load_average:.1f}",
             *(number(r.find_ms[k][q]) for k in FIND_KINDS for q in ("median", "p90", "cpu"))]
            for backend, steps in results.items() for r in steps]
    return markdown_table(["backend", "instances", "inst/s", "server CPU ms/inst",
                           "database CPU ms/inst", "load", "name* median ms", "name* p90 ms",
                           "name* CPU ms", "date range median ms", "date range p90 ms",
                           "date range CPU ms"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--total", type=int, default=200_000, help="instances at the end")
    parser.add_argument("--step", type=int, default=10_000, help="instances per step")
    parser.add_argument("--clients", type=int, default=5, help="parallel REST clients")
    parser.add_argument("--calls", type=int, default=20, help="find calls per kind and step")
    parser.add_argument("--find-limit", type=int, default=100,
                        help="Limit of each find, as a paging client sends (0: none)")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a PostgreSQL server and maintenance database (DSN)")
    parser.add_argument("--seed", default="scaling")
    parser.add_argument("--json", type=Path, help="write every number to this file")
    args = parser.parse_args()
    if args.step % PER_PATIENT or args.total < args.step or args.calls < 2:
        raise SystemExit(f"--step must be a multiple of {PER_PATIENT}, --total at least "
                         "--step, --calls at least 2")
    results: dict[str, list[StepResult]] = {}

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(
                {"load_average": os.getloadavg(), "cpus": os.cpu_count(), "arguments": sys.argv[1:],
                 **{backend: [asdict(r) for r in steps] for backend, steps in results.items()}},
                indent=1))

    for backend in args.backends:
        measure_backend(backend, args, results.setdefault(backend, []), save)
    print(table(results))


if __name__ == "__main__":
    main()
