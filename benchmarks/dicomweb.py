"""DICOMweb: Lanthorn's plugin against Orthanc 1.10 with its DICOMweb plugin, side by side.

Each server is loaded with one generated series over REST; then, ``--rounds`` times,
each server in turn is restarted and measured (so both see the same load on a shared
machine): the first request of each kind (cold: nothing cached by the server; the
operating system's page cache is warm for both), then the median of ``--repeat`` more
(warm). Lanthorn's cold metadata after the first round reads the JSON it kept.

- QIDO-RS latency: ``/studies?PatientID=..`` and ``/studies/{uid}/series``;
- series metadata latency: ``/studies/{uid}/series/{uid}/metadata``;
- WADO-RS retrieval throughput: ``/studies/{uid}`` as multipart, in MB/s.

    python benchmarks/dicomweb.py --dataset ct:1x1x1x1000 --repeat 5 --rounds 3

Needs the Debian packages ``orthanc`` and ``orthanc-dicomweb`` for the comparison
(``--no-orthanc`` measures Lanthorn alone) and ``lanthorn-dicomweb`` installed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
from compare_orthanc import Server, _lanthorn, _orthanc
from generate import Spec
from run import markdown_table, number

ORTHANC_DICOMWEB = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
MULTIPART = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def load(server: Server, spec: Spec) -> tuple[str, str, str, int]:
    """Upload the dataset; the first series' study, series and patient, and the bytes."""
    size = 0
    with httpx2.Client(base_url=server.target().url, timeout=600) as http:
        for _, data in spec.files():
            http.post("/instances", content=data).raise_for_status()
            size += len(data)
        study = http.get("/studies", params={"expand": ""}).json()[0]
        series = http.get(f"/studies/{study['ID']}/series").json()[0]
    return (study["MainDicomTags"]["StudyInstanceUID"],
            series["MainDicomTags"]["SeriesInstanceUID"],
            study["PatientMainDicomTags"]["PatientID"], size)


def measure(server: Server, study: str, series: str, patient: str, size: int,
            repeat: int) -> dict[str, tuple[float, float]]:
    """(cold, warm median) per metric; seconds, except throughput in MB/s."""
    root = f"{server.target().url}/dicom-web"
    requests: dict[str, Callable[[httpx2.Client], httpx2.Response]] = {
        "QIDO /studies?PatientID (ms)":
            lambda h: h.get(f"{root}/studies", params={"PatientID": patient}),
        "QIDO /studies/{uid}/series (ms)": lambda h: h.get(f"{root}/studies/{study}/series"),
        "series metadata (ms)":
            lambda h: h.get(f"{root}/studies/{study}/series/{series}/metadata"),
        "WADO-RS study (MB/s)":
            lambda h: h.get(f"{root}/studies/{study}", headers={"Accept": MULTIPART}),
    }
    results = {}
    with httpx2.Client(timeout=600) as http:
        for name, request in requests.items():
            times = [_timed(request, http) for _ in range(repeat + 1)]
            cold, warm = times[0], statistics.median(times[1:])
            results[name] = (size / cold / 1e6, size / warm / 1e6) if "MB/s" in name \
                else (cold * 1000, warm * 1000)
    return results


def _timed(request: Callable[[httpx2.Client], httpx2.Response], http: httpx2.Client) -> float:
    start = time.perf_counter()
    response = request(http)
    response.raise_for_status()
    return time.perf_counter() - start


def run(spec: Spec, repeat: int, rounds: int, orthanc: bool,
        root: Path) -> dict[str, dict[str, list[tuple[float, float, float]]]]:
    """Load each server, then ``rounds`` times: restart each in turn and measure it, so
    Lanthorn and Orthanc see the same load on a shared machine. Per server and metric,
    a (cold, warm, one-minute load average) triple per round."""
    servers = [_lanthorn(root, 1)]
    if orthanc:
        reference = _orthanc(root, nodelay=False)
        settings = reference.folder / "config.json"
        text = settings.read_text().replace('"Plugins": []',
                                            f'"Plugins": ["{ORTHANC_DICOMWEB}"]')
        settings.write_text(text[:-1] + ', "DicomWeb": {"Enable": true}}')
        servers.append(reference)
    names = [server.name for server in servers]  # a start adds the version to the name
    uids = []
    for server, name in zip(servers, names, strict=True):
        with _started(server, name):
            uids.append(load(server, spec))
    results: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
    for _ in range(rounds):
        for server, name, loaded in zip(servers, names, uids, strict=True):
            with _started(server, name):  # restarted: the first requests are cold
                measured = measure(server, *loaded, repeat=repeat)
            for metric, (cold, warm) in measured.items():
                results.setdefault(server.label, {}).setdefault(metric, []).append(
                    (cold, warm, os.getloadavg()[0]))
    return results


@contextmanager
def _started(server: Server, name: str) -> Iterator[None]:
    server.name = name  # each start adds the version the server reports
    with server:
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ct:1x1x1x1000", type=Spec.parse,
                        help="PROFILE:PxSxRxI (default: one series of 1,000 CT slices)")
    parser.add_argument("--repeat", type=int, default=5, help="warm requests per metric")
    parser.add_argument("--rounds", type=int, default=3,
                        help="restarts of each server, taken in turn")
    parser.add_argument("--no-orthanc", action="store_true", help="measure Lanthorn alone")
    args = parser.parse_args()
    orthanc = not args.no_orthanc
    if orthanc and not ORTHANC_DICOMWEB.exists():
        parser.error(f"{ORTHANC_DICOMWEB} is missing (apt-get install orthanc-dicomweb), "
                     "or pass --no-orthanc")
    with tempfile.TemporaryDirectory(prefix="dicomweb-bench-") as folder:
        results = run(args.dataset, args.repeat, args.rounds, orthanc, Path(folder))
    labels = list(results)
    metrics = list(next(iter(results.values())))
    rows = [[metric, *[_cell(results[label][metric]) for label in labels]]
            for metric in metrics]
    loads = [load for label in labels for triples in results[label].values()
             for *_, load in triples]
    print(f"dataset {args.dataset}; cold / warm (median of {args.repeat}); each cell the "
          f"median of {args.rounds} rounds [every round's cold]; load average "
          f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores\n")
    print(markdown_table(["metric", *labels], rows))


def _cell(triples: list[tuple[float, float, float]]) -> str:
    colds = [cold for cold, _, _ in triples]
    warm = statistics.median(w for _, w, _ in triples)
    return f"{number(statistics.median(colds))} / {number(warm)} " \
           f"[{', '.join(number(c) for c in colds)}]"


if __name__ == "__main__":
    main()
