"""One benchmark runner for any server with Orthanc's REST API and a DICOM listener.

The same steps run unchanged against Lanthorn and against Orthanc:

    python benchmarks/run.py --url http://127.0.0.1:8042 --dicom-port 4242 --aet LANTHORN \\
        --dataset ct:1x1x2x100 small:2x2x2x50 --find-dataset small:100x2x5x5 --json out.json

Steps (``--steps``, all by default):

- ``rest``: ``POST /instances`` from 1 and 4 clients (``--clients``);
- ``pynetdicom``: C-STORE over 1 and 4 associations, one thread each, files in order;
- ``storescu``: C-STORE from 1 and 4 parallel DCMTK ``storescu`` processes;
- ``find``: ``/tools/find`` latency (median and p90 of ``--calls`` calls);
- ``cfind``: C-FIND latency at study level; "not available" if the server refuses it;
- ``download``: ``GET /instances/{id}/file`` from 1 and 4 clients;
- ``archive``: ``GET /studies/{id}/archive``; "not available" if the route is a 404;
- ``preview``: ``GET /instances/{id}/preview`` (a PNG of the first frame), ms per image;
- ``anonymize``: ``POST /studies/{id}/anonymize`` of each study (new resources stored,
  then deleted out of the clock), instances/s;
- ``memory``: peak resident memory (VmHWM) of ``--pid`` and its child processes.

Ingest steps send a new copy of each ``--dataset`` (fresh UIDs from a derived seed) on
every run, so nothing is a duplicate. Find, C-FIND, download and archive use copies loaded
once with the base seed (skipped when the server already holds them). Each number is the
median, min and max over ``--repeat`` runs; the clients read their files from the page
cache inside the clock (written just before it starts).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx2
from generate import SOP_CLASSES, Spec
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from lanthorn.testing import system_tool

#: Send files from disk without decoding them (pynetdicom's documented switch).
_config.STORE_SEND_CHUNKED_DATASET = True

STEPS = ("rest", "pynetdicom", "storescu", "find", "cfind", "download", "archive", "preview",
         "anonymize", "memory")
#: Steps that work on the copies loaded once (``--dataset`` with the base seed).
ON_LOADED = frozenset({"find", "cfind", "download", "archive", "preview", "anonymize"})
HTTP_TIMEOUT = 120.0
DICOM_TIMEOUT = 60.0
STORESCU_TIMEOUT = 1800.0
LOADED = "loaded"  # the seed suffix of the copies that find, download and archive use

T = TypeVar("T")
R = TypeVar("R")


class Unavailable(Exception):
    """The server does not offer this feature (a 404, a refused C-FIND)."""


class BenchmarkError(Exception):
    """A step failed or a server gave a wrong answer."""


@dataclass(frozen=True)
class Target:
    """Where the server under test answers."""

    url: str = "http://127.0.0.1:8042"
    dicom_host: str = "127.0.0.1"
    dicom_port: int = 4242
    aet: str = "LANTHORN"
    calling_aet: str = "BENCHSCU"
    pid: int | None = None


@dataclass(frozen=True)
class Options:
    datasets: tuple[Spec, ...]
    find_dataset: Spec | None
    clients: tuple[int, ...]
    repeat: int
    calls: int
    steps: frozenset[str]
    seed: str
    cold: bool = False  # drop the page cache before each archive run (needs root)


@dataclass
class Metric:
    """One row of results: a value per run, or a note saying why there is none."""

    name: str
    unit: str
    higher_is_better: bool = True
    values: list[float] = field(default_factory=list)
    megabytes_each: float | None = None  # MB per counted item, for an MB/s column
    note: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def as_json(self) -> dict:
        spread = {"median": self.median, "min": min(self.values, default=None),
                  "max": max(self.values, default=None)}
        return {**asdict(self), **spread}


@dataclass(frozen=True)
class Query:
    """One find request and the number of answers it must get."""

    level: str
    tags: dict[str, str]
    expected: int
    exact: bool

    def check(self, count: int) -> None:
        if count < self.expected or (self.exact and count != self.expected):
            wanted = self.expected if self.exact else f"at least {self.expected}"
            raise BenchmarkError(f"{self.level} {self.tags}: {count} answers, expected {wanted}")


Key = tuple[int, int, int, int]  # (patient, study, series, instance) of a dataset


def _by_patient_id(spec: Spec, key: Key) -> Query:
    return Query("Study", {"PatientID": spec.patient_id(key[0])}, spec.studies, exact=True)


def _by_name_wildcard(spec: Spec, key: Key) -> Query:
    """The first three letters of a family name: about a twentieth of the patients."""
    pattern = spec.patient_name(key[0])[:3] + "*"
    return Query("Study", {"PatientName": pattern}, spec.studies, exact=False)


def _by_date_range(spec: Spec, key: Key) -> Query:
    """The whole year of one study: about a twentieth of the studies."""
    year = spec.study_date(key[0], key[1])[:4]
    return Query("Study", {"StudyDate": f"{year}0101-{year}1231"}, 1, exact=False)


def _by_instance_uid(spec: Spec, key: Key) -> Query:
    return Query("Instance", {"SOPInstanceUID": spec.uid(*key)}, 1, exact=True)


QUERIES: dict[str, Callable[[Spec, Key], Query]] = {
    "study by PatientID": _by_patient_id,
    "study by PatientName wildcard": _by_name_wildcard,
    "study by StudyDate range": _by_date_range,
    "instance by SOPInstanceUID": _by_instance_uid,
}
CFIND_QUERIES = ("study by PatientID", "study by PatientName wildcard")


# --- running ---------------------------------------------------------------------------------


def benchmark(target: Target, options: Options) -> list[Metric]:
    """Every requested step against one server.

    Loads come first, out of any clock. C-FIND comes last: a server that rejects the
    association may hold on to it for a while (Lanthorn does, see docs/performance.md),
    which must not change the C-STORE steps' numbers.
    """
    metrics: list[Metric] = []
    steps = options.steps
    if steps & ON_LOADED:
        for spec in _loaded_specs(options):
            metrics += _ensure_loaded(target, spec, max(options.clients))
    searched = _loaded(options.find_dataset or options.datasets[0], options)
    if "find" in steps:
        metrics += _latencies("find", list(QUERIES), searched, options, target.pid,
                              lambda: _rest_asker(target))
    for spec in options.datasets:
        if "download" in steps:
            metrics += [_download(target, _loaded(spec, options), n, options)
                        for n in options.clients]
        if "archive" in steps:
            metrics.append(_archive(target, _loaded(spec, options), options))
        if "preview" in steps:
            metrics.append(_preview(target, _loaded(spec, options), options))
        if "anonymize" in steps:
            metrics.append(_anonymize(target, _loaded(spec, options), options))
    for spec in options.datasets:
        for step in SENDERS:
            if step in steps:
                for n in options.clients:
                    metrics += _ingest(target, spec, step, n, options)
    if "cfind" in steps:
        metrics += _latencies("C-FIND", CFIND_QUERIES, searched, options, target.pid,
                              lambda: _cfind_asker(target))
    if "memory" in steps:
        metrics.append(_memory(target))
    return metrics


def _loaded(spec: Spec, options: Options) -> Spec:
    return spec.with_seed(f"{options.seed}/{LOADED}")


def _loaded_specs(options: Options) -> list[Spec]:
    specs = [*options.datasets, *([options.find_dataset] if options.find_dataset else [])]
    return [_loaded(spec, options) for spec in dict.fromkeys(specs)]


def _guarded(metrics: list[Metric], measure: Callable[[], None]) -> list[Metric]:
    """Run ``measure`` (which fills the metrics); a failure becomes their note."""
    try:
        measure()
    except Unavailable as exc:
        note = f"not available: {exc}"
    except (BenchmarkError, httpx2.HTTPError, subprocess.SubprocessError, OSError) as exc:
        note = f"failed: {exc}"
    else:
        return metrics
    for metric in metrics:
        metric.note = note
    _progress(f"{metrics[0].name}: {note}")
    return metrics


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- ingest ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """The files one client sends, in order: ``folder / name`` for each name."""

    folder: Path
    names: list[str]

    @property
    def paths(self) -> Iterator[Path]:
        return (self.folder / name for name in self.names)


def _ingest(target: Target, spec: Spec, step: str, clients: int,
            options: Options) -> list[Metric]:
    """Instances/s, and the server's CPU per instance (its processes' user + system
    time, when its PID is known): on a machine whose cores the clients share, the CPU a
    server spends per instance says more than its rate."""
    label, sender = SENDERS[step]
    metric = Metric(f"{label} x{clients} [{spec}]", "inst/s")
    cpu = Metric(f"{label} x{clients} [{spec}], server CPU", "ms/inst", higher_is_better=False)
    work = Metric(f"{label} x{clients} [{spec}], server instructions", "M/inst",
                  higher_is_better=False)

    def measure() -> None:
        for run in range(options.repeat):
            copy = spec.with_seed(f"{options.seed}/{step}/{clients}/{run}")
            if _holds(target, copy):
                raise BenchmarkError(f"the server already holds {copy.seed}: pass another --seed")
            used = tree_cpu_seconds(target.pid) if target.pid else 0.0
            with Instructions(target.pid) as counted:
                seconds, size = _send(target, copy, sender, clients)
            metric.values.append(copy.count / seconds)
            metric.megabytes_each = size / copy.count / 1e6
            if target.pid:
                cpu.values.append((tree_cpu_seconds(target.pid) - used) * 1000 / copy.count)
            counted.record(work, copy.count)
            _progress(f"{metric.name} run {run + 1}: {metric.values[-1]:.1f} inst/s"
                      + (f", {cpu.values[-1]:.2f} ms CPU each" if target.pid else ""))

    if not target.pid:
        cpu.note = "not available: no --pid given"
    return _guarded([metric, cpu, work], measure)


def _ensure_loaded(target: Target, spec: Spec, clients: int) -> list[Metric]:
    """Upload the copy that find/download/archive use, unless the server has it already."""
    if _holds(target, spec):
        return []
    metric = Metric(f"load over REST x{clients} [{spec}]", "inst/s")
    seconds, size = _send(target, spec, _send_rest, clients)
    metric.values, metric.megabytes_each = [spec.count / seconds], size / spec.count / 1e6
    _progress(f"{metric.name}: {metric.values[0]:.1f} inst/s")
    return [metric]


def _send(target: Target, spec: Spec, sender: Callable[[Target, Chunk], None],
          clients: int) -> tuple[float, int]:
    """(seconds, bytes) to send the dataset from ``clients`` parallel senders; checked."""
    with tempfile.TemporaryDirectory(prefix="lanthorn-bench-") as folder:
        chunks, size = _write_chunks(spec, Path(folder), clients)
        os.sync()  # so that writing back our files does not slow the server's fsyncs
        before = _instance_count(target)
        seconds, _ = _timed(lambda chunk: sender(target, chunk), chunks)
    stored = _instance_count(target) - before
    if stored != spec.count:
        raise BenchmarkError(f"sent {spec.count} new instances, the server added {stored}")
    return seconds, size


def _write_chunks(spec: Spec, folder: Path, clients: int) -> tuple[list[Chunk], int]:
    """Write the files, one folder per client; returns the chunks and the bytes written."""
    chunks, size = [], 0
    for n, keys in enumerate(_split(list(spec.keys()), clients)):
        chunk = Chunk(folder / str(n), [spec.file_name(*key) for key in keys])
        for key, path in zip(keys, chunk.paths, strict=True):
            data = spec.instance(*key)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            size += len(data)
        chunks.append(chunk)
    return chunks, size


def _split(items: Sequence[T], parts: int) -> list[Sequence[T]]:
    """Contiguous, non-empty slices in order: each client sends (or reads) whole series,
    as separate modalities would, rather than interleaving within one series."""
    slices = [items[n * len(items) // parts:(n + 1) * len(items) // parts] for n in range(parts)]
    return [piece for piece in slices if piece]


def _timed(work: Callable[[T], R], parts: Sequence[T]) -> tuple[float, list[R]]:
    """Seconds for one thread per part to finish, and the results; failures are raised."""
    with ThreadPoolExecutor(len(parts)) as pool:
        start = time.perf_counter()
        results = [future.result() for future in [pool.submit(work, part) for part in parts]]
        return time.perf_counter() - start, results


def _send_rest(target: Target, chunk: Chunk) -> None:
    with _client(target) as http:
        for path in chunk.paths:
            response = http.post("/instances", content=path.read_bytes())
            if response.status_code != 200:
                raise BenchmarkError(f"POST /instances: {response.status_code} {response.text}")


def _send_pynetdicom(target: Target, chunk: Chunk) -> None:
    contexts = [(sop_class, ExplicitVRLittleEndian) for sop_class in SOP_CLASSES.values()]
    with _association(target, contexts) as association:
        for path in chunk.paths:
            status = association.send_c_store(path)
            if "Status" not in status or status.Status != 0:
                raise BenchmarkError(f"C-STORE of {path.name}: status {status}")


def _send_storescu(target: Target, chunk: Chunk) -> None:
    """One storescu process for the chunk; ``-R -xe``: only the files' SOP classes, with
    their transfer syntax (the generator writes Explicit VR Little Endian).

    ``TCP_NODELAY=1``: without it storescu's own two writes per request (command, then
    data set) wait ~40 ms for the server's delayed ACK, whatever the server.
    """
    storescu = system_tool("storescu")  # DCMTK's, not pynetdicom's app in this venv
    if storescu is None:
        raise Unavailable("storescu is not installed (apt-get install dcmtk)")
    command = [storescu, "-aet", target.calling_aet, "-aec", target.aet, "-R", "-xe",
               target.dicom_host, str(target.dicom_port), *chunk.names]
    done = subprocess.run(command, cwd=chunk.folder, capture_output=True, text=True,
                          env={**os.environ, "TCP_NODELAY": "1"}, timeout=STORESCU_TIMEOUT,
                          check=False)
    if done.returncode != 0:
        raise BenchmarkError(f"storescu exited with {done.returncode}: {done.stderr[-500:]}")


#: Ingest steps: their label and the function one client runs.
SENDERS: dict[str, tuple[str, Callable[[Target, Chunk], None]]] = {
    "rest": ("REST upload", _send_rest),
    "pynetdicom": ("C-STORE pynetdicom", _send_pynetdicom),
    "storescu": ("C-STORE storescu", _send_storescu),
}


# --- REST helpers ----------------------------------------------------------------------------


def _client(target: Target) -> httpx2.Client:
    """A client that takes answers as they are, like curl: when asked for gzip (httpx's
    default), Orthanc compresses every download, ~10 ms of CPU for a 0.5 MB file."""
    return httpx2.Client(base_url=target.url, timeout=HTTP_TIMEOUT,
                         headers={"Accept-Encoding": "identity"})


def _find(http: httpx2.Client, level: str, tags: dict[str, str], expand: bool = False,
          limit: int = 0) -> list:
    request = {"Level": level, "Query": tags, "Expand": expand}
    if limit:
        request["Limit"] = limit
    response = http.post("/tools/find", json=request)
    response.raise_for_status()
    return response.json()


def _holds(target: Target, spec: Spec) -> bool:
    """Whether the server has the dataset's last instance (so the dataset was sent)."""
    last = (spec.patients - 1, spec.studies - 1, spec.series - 1, spec.instances - 1)
    with _client(target) as http:
        return bool(_find(http, "Instance", {"SOPInstanceUID": spec.uid(*last)}))


def _instance_count(target: Target) -> int:
    with _client(target) as http:
        response = http.get("/statistics")
        response.raise_for_status()
        return int(response.json()["CountInstances"])


def _ids(target: Target, spec: Spec, level: str) -> list[str]:
    with _client(target) as http:
        return [public_id for p in range(spec.patients)
                for public_id in _find(http, level, {"PatientID": spec.patient_id(p)})]


# --- find and C-FIND -------------------------------------------------------------------------


Asker = Callable[[Query], None]


def _latencies(prefix: str, kinds: Sequence[str], spec: Spec, options: Options,
               pid: int | None, open_asker: Callable[[], AbstractContextManager[Asker]]
               ) -> list[Metric]:
    """Median and p90 latency (ms) of ``options.calls`` random queries of each kind, and
    the server's instructions per query."""
    rows = {kind: (Metric(f"{prefix} {kind}, median", "ms", False),
                   Metric(f"{prefix} {kind}, p90", "ms", False),
                   Metric(f"{prefix} {kind}, server instructions", "M/query", False))
            for kind in kinds}

    def measure() -> None:
        for run in range(options.repeat):
            rng = random.Random(f"{options.seed}/{prefix}/{run}")
            with open_asker() as ask:
                for kind, (median, p90, work) in rows.items():
                    with Instructions(pid) as counted:
                        times = [_time_query(ask, QUERIES[kind](spec, _random_key(spec, rng)))
                                 for _ in range(options.calls)]
                    median.values.append(statistics.median(times))
                    p90.values.append(statistics.quantiles(times, n=10, method="inclusive")[8])
                    counted.record(work, options.calls)
                    _progress(f"{prefix} {kind} run {run + 1}: {median.values[-1]:.1f} ms")

    return _guarded([m for row in rows.values() for m in row], measure)


def _random_key(spec: Spec, rng: random.Random) -> Key:
    return (rng.randrange(spec.patients), rng.randrange(spec.studies),
            rng.randrange(spec.series), rng.randrange(spec.instances))


def _time_query(ask: Asker, query: Query) -> float:
    start = time.perf_counter()
    ask(query)
    return (time.perf_counter() - start) * 1000


@contextmanager
def _rest_asker(target: Target, limit: int = 0) -> Iterator[Asker]:
    """Expanded finds; with ``limit``, a page of at most that many answers, as a user
    interface asks for (a query's expected count must then not exceed it)."""
    with _client(target) as http:
        yield lambda query: query.check(len(_find(http, query.level, query.tags, expand=True,
                                                  limit=limit)))


@contextmanager
def _cfind_asker(target: Target) -> Iterator[Asker]:
    model = StudyRootQueryRetrieveInformationModelFind
    with _association(target, [(model, ExplicitVRLittleEndian)], Unavailable) as association:

        def ask(query: Query) -> None:
            identifier = Dataset()
            identifier.QueryRetrieveLevel = query.level.upper()
            for keyword in ("PatientID", "PatientName", "StudyDate", "StudyDescription",
                            "StudyInstanceUID", *query.tags):
                setattr(identifier, keyword, query.tags.get(keyword, ""))
            answers = list(association.send_c_find(identifier, model))
            status = answers[-1][0] if answers else None
            if status is None or "Status" not in status:
                raise BenchmarkError("C-FIND: no final status (association lost?)")
            if status.Status != 0:
                raise Unavailable(f"C-FIND status 0x{status.Status:04X}")
            query.check(len(answers) - 1)

        yield ask


@contextmanager
def _association(target: Target, contexts: list[tuple[str, str]],
                 refusal: type[Exception] = BenchmarkError) -> Iterator[Association]:
    """An association proposing ``contexts``; ``refusal`` is raised unless all are accepted
    (Unavailable for a service the server may lack, a failure for C-STORE)."""
    ae = AE(ae_title=target.calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = DICOM_TIMEOUT
    for abstract_syntax, transfer_syntax in contexts:
        ae.add_requested_context(abstract_syntax, transfer_syntax)
    association = ae.associate(target.dicom_host, target.dicom_port, ae_title=target.aet)
    if not association.is_established:
        raise refusal("association rejected")
    # Like storescu's TCP_NODELAY=1: the request's two writes must not wait for a delayed ACK.
    association.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        accepted = {context.abstract_syntax for context in association.accepted_contexts}
        refused = {syntax for syntax, _ in contexts} - accepted
        if refused:
            raise refusal(f"presentation contexts refused: {', '.join(sorted(refused))}")
        yield association
    finally:
        association.release()


# --- download and archive --------------------------------------------------------------------


def _download(target: Target, spec: Spec, clients: int, options: Options) -> Metric:
    metric = Metric(f"download x{clients} [{spec}]", "inst/s")

    def fetch(ids: list[str]) -> int:
        with _client(target) as http:
            return sum(len(_get(http, f"/instances/{i}/file").content) for i in ids)

    def measure() -> None:
        ids = _ids(target, spec, "Instance")
        if len(ids) != spec.count:
            raise BenchmarkError(f"the server lists {len(ids)} of {spec.count} instances")
        for run in range(options.repeat):
            seconds, sizes = _timed(fetch, _split(ids, clients))
            metric.values.append(len(ids) / seconds)
            metric.megabytes_each = sum(sizes) / len(ids) / 1e6
            _progress(f"{metric.name} run {run + 1}: {metric.values[-1]:.1f} inst/s")

    return _guarded([metric], measure)[0]


def _archive(target: Target, spec: Spec, options: Options) -> Metric:
    """Each study's ZIP in turn; the rate counts the instances inside."""
    cold = ", cold" if options.cold else ""
    metric = Metric(f"study archive x1{cold} [{spec}]", "inst/s")

    def measure() -> None:
        studies = _ids(target, spec, "Study")
        for run in range(options.repeat):
            if options.cold:
                drop_page_cache()
            with _client(target) as http:
                start = time.perf_counter()
                size = sum(_zip_size(http, study) for study in studies)
                metric.values.append(spec.count / (time.perf_counter() - start))
            metric.megabytes_each = size / spec.count / 1e6
            _progress(f"{metric.name} run {run + 1}: {metric.values[-1]:.1f} inst/s")

    return _guarded([metric], measure)[0]


def drop_page_cache() -> None:
    """Write back and forget every cached file page, so that the next reads hit the disk."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        raise BenchmarkError(f"cannot drop the page cache (--cold needs root): {exc}") from None


def _preview(target: Target, spec: Spec, options: Options) -> Metric:
    """The median time of one preview, over every instance of the dataset."""
    metric = Metric(f"preview [{spec}]", "ms", higher_is_better=False)

    def measure() -> None:
        ids = _ids(target, spec, "Instance")
        with _client(target) as http:
            for run in range(options.repeat):
                times = []
                for instance in ids:
                    start = time.perf_counter()
                    _get(http, f"/instances/{instance}/preview")
                    times.append(1000 * (time.perf_counter() - start))
                metric.values.append(statistics.median(times))
                _progress(f"{metric.name} run {run + 1}: {metric.values[-1]:.1f} ms")

    return _guarded([metric], measure)[0]


def _anonymize(target: Target, spec: Spec, options: Options) -> Metric:
    """Each study anonymized in turn; the new studies are deleted after the clock."""
    metric = Metric(f"anonymize x1 [{spec}]", "inst/s")

    def measure() -> None:
        studies = _ids(target, spec, "Study")
        with _client(target) as http:
            for run in range(options.repeat):
                start = time.perf_counter()
                made = [_post(http, f"/studies/{study}/anonymize", {})["ID"]
                        for study in studies]
                metric.values.append(spec.count / (time.perf_counter() - start))
                for study in made:
                    http.delete(f"/studies/{study}")
                _progress(f"{metric.name} run {run + 1}: {metric.values[-1]:.1f} inst/s")

    return _guarded([metric], measure)[0]


def _post(http: httpx2.Client, path: str, body: dict) -> dict:
    response = http.post(path, json=body, timeout=600)
    if response.status_code != 200:
        raise BenchmarkError(f"POST {path}: {response.status_code}")
    return response.json()


def _zip_size(http: httpx2.Client, study: str) -> int:
    with http.stream("GET", f"/studies/{study}/archive") as response:
        if response.status_code == 404:
            raise Unavailable("/studies/{id}/archive is a 404")
        response.raise_for_status()
        return sum(len(block) for block in response.iter_bytes())


def _get(http: httpx2.Client, path: str) -> httpx2.Response:
    response = http.get(path)
    if response.status_code != 200:
        raise BenchmarkError(f"GET {path}: {response.status_code}")
    return response


# --- memory ----------------------------------------------------------------------------------


def _memory(target: Target) -> Metric:
    metric = Metric("server peak memory (VmHWM)", "MB", higher_is_better=False)
    if target.pid:
        metric.values.append(peak_memory_mb(target.pid))
    else:
        metric.note = "not available: no --pid given"
    return metric


class Instructions(AbstractContextManager["Instructions"]):
    """User-space instructions that the server's processes retire inside the ``with``,
    counted by ``perf stat`` (Debian's linux-perf). On a VM whose speed drifts by ±25%
    between runs, CPU time and rates drift with it; the count of the same work does
    not, so it shows what a change to the server saves. None without a PID, without
    perf, or where the machine exposes no counters."""

    #: How long perf takes to attach before the work may start.
    ATTACH = 0.3

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.count: int | None = None
        self.why_not = "no --pid given" if pid is None else ""
        self._perf: subprocess.Popen[str] | None = None

    def __enter__(self) -> Instructions:
        if self.pid is None:
            return self
        if not shutil.which("perf"):
            self.why_not = "perf is not installed (apt-get install linux-perf)"
            return self
        pids = ",".join(map(str, process_tree(self.pid)))
        self._perf = subprocess.Popen(
            ["perf", "stat", "-x", ",", "-e", "instructions:u", "-p", pids],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # counts: stderr
        time.sleep(self.ATTACH)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._perf is None:
            return
        self._perf.send_signal(signal.SIGINT)
        _, printed = self._perf.communicate(timeout=30)
        line = next((x for x in printed.splitlines() if "instructions" in x), "")
        value = line.split(",", 1)[0]
        if value.isdigit():
            self.count = int(value)
        else:
            self.why_not = f"perf stat counted no instructions ({value or printed.strip()})"

    def record(self, metric: Metric, per: int) -> None:
        """Millions of instructions per item into ``metric``, or why there are none."""
        if self.count is None:
            metric.note = f"not available: {self.why_not}"
        else:
            metric.values.append(self.count / per / 1e6)


def peak_memory_mb(pid: int) -> float:
    """Sum of VmHWM (peak resident set) over ``pid`` and its descendants, in MB.

    For worker processes this is an upper bound of the peak the machine saw: each
    process's peak is summed even if they did not happen at the same moment.
    """
    return sum(_vm_hwm_kb(p) for p in process_tree(pid)) / 1024


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its live descendants (a server's workers
    live as long as it does)."""
    return sum(seconds for p in process_tree(pid) if (seconds := cpu_seconds(p)) is not None)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process, or None once it exited."""
    fields = _stat(pid)  # fields[11], [12]: utime, stime (stat fields 14 and 15)
    return (int(fields[11]) + int(fields[12])) / _TICKS if fields else None


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants (the workers of ``--workers``)."""
    parents = {int(entry.name): int(fields[1]) for entry in Path("/proc").iterdir()
               if entry.name.isdigit() and (fields := _stat(int(entry.name)))}
    tree = [root]
    for pid in tree:
        tree.extend(child for child, parent in parents.items() if parent == pid)
    return tree


_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name, or None once it exited."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _vm_hwm_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), "VmHWM: 0 kB")
    return int(line.split()[1])


# --- output ----------------------------------------------------------------------------------


def number(value: float | None) -> str:
    """Three significant digits or so: enough for numbers that vary by a few percent."""
    if value is None:
        return "–"
    decimals = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:.{decimals}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table padded for the terminal (and pasted as is into the docs)."""
    widths = [max(len(str(row[n])) for row in [headers, *rows]) for n in range(len(headers))]
    lines = [[str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
             for row in [headers, ["-" * w for w in widths], *rows]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def results_table(metrics: Sequence[Metric]) -> str:
    rows = []
    for m in metrics:
        if m.note:
            rows.append([m.name, m.unit, m.note, "", "", ""])
            continue
        megabytes = number(m.median * m.megabytes_each) if m.megabytes_each else ""
        rows.append([m.name, m.unit, number(m.median), number(min(m.values)),
                     number(max(m.values)), megabytes])
    return markdown_table(["step", "unit", "median", "min", "max", "MB/s"], rows)


# --- command line ----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that say what to measure (shared with compare_orthanc.py)."""
    parser.add_argument("--dataset", type=Spec.parse, nargs="+",
                        default=[Spec.parse("ct:1x1x2x100"), Spec.parse("small:2x2x2x50")],
                        help="PROFILE:PxSxRxI datasets to ingest, download and archive")
    parser.add_argument("--find-dataset", type=Spec.parse,
                        help="an extra dataset loaded for find and C-FIND (default: the first "
                             "--dataset), e.g. small:100x2x5x5 for 5,000 instances")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4],
                        help="parallel clients, associations or storescu processes")
    parser.add_argument("--repeat", type=int, default=3, help="runs of every step")
    parser.add_argument("--calls", type=int, default=30, help="queries per find run (>= 2)")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--seed", default="bench",
                        help="base of every dataset's seed; a server holding this seed's "
                             "ingest copies needs another one")
    parser.add_argument("--json", type=Path, help="write every number to this file")
    parser.add_argument("--cold", action="store_true",
                        help="drop the page cache before each archive run (root only)")


def options_from(args: argparse.Namespace) -> Options:
    if args.calls < 2 or args.repeat < 1 or min(args.clients) < 1:
        raise SystemExit("--calls must be at least 2, --repeat and --clients at least 1")
    return Options(tuple(args.dataset), args.find_dataset, tuple(args.clients), args.repeat,
                   args.calls, frozenset(args.steps), args.seed, args.cold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=Target.url, help="REST API base URL")
    parser.add_argument("--dicom-host", default=Target.dicom_host)
    parser.add_argument("--dicom-port", type=int, default=Target.dicom_port)
    parser.add_argument("--aet", default=Target.aet, help="the server's (called) AET")
    parser.add_argument("--calling-aet", default=Target.calling_aet, help="our AET")
    parser.add_argument("--pid", type=int, help="server process, for peak memory")
    add_arguments(parser)
    args = parser.parse_args()
    target = Target(args.url.rstrip("/"), args.dicom_host, args.dicom_port, args.aet,
                    args.calling_aet, args.pid)
    metrics = benchmark(target, options_from(args))
    print(results_table(metrics))
    if args.json:
        args.json.write_text(json.dumps({"target": asdict(target),
                                         "metrics": [m.as_json() for m in metrics]}, indent=1))


if __name__ == "__main__":
    main()
