"""Lanthorn against Orthanc (the Debian package), side by side, in one run on this machine.

Starts each server in turn on free loopback ports and a temporary folder: Orthanc as
packaged, Orthanc with ``TCP_NODELAY=1`` in its environment (DCMTK then turns Nagle's
algorithm off on its DICOM sockets), and ``lanthorn serve`` once per ``--workers`` value.
Measures the machine's ceilings for the same bytes first (ceilings.py), then runs
run.py's steps against each server, stops it, and prints the medians side by side with
the ratios Lanthorn/Orthanc, and the ceilings.
Servers are stopped at the end, on Ctrl-C, SIGTERM and errors.

    python benchmarks/compare_orthanc.py --dataset ct:1x1x2x100 small:2x2x2x50 \\
        --find-dataset small:100x2x5x5 --workers 1 2 --json results.json

Both servers get the same settings: SyncStorageArea true, StorageAccessOnFind as
Lanthorn's default, RemoteAccessAllowed and AuthenticationEnabled false, no plugins,
C-STORE and C-FIND only from the benchmark's AET on 127.0.0.1. Orthanc has no option to
listen on loopback only: run the script in its own network namespace to keep it off the
network (``unshare -n sh -c 'ip link set lo up && python benchmarks/compare_orthanc.py'``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx2
from ceilings import ceilings
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from run import (
    Metric,
    Options,
    Target,
    add_arguments,
    benchmark,
    markdown_table,
    number,
    options_from,
    results_table,
)

from lanthorn.config import Config
from lanthorn.testing import free_port

START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
SCU_AET = Target.calling_aet


@dataclass
class Server:
    """A server process this script starts and stops, and where it answers."""

    name: str  # "Orthanc" or "Lanthorn", completed with the version once it answers
    variant: str  # what differs from the packaged defaults, for the column title
    command: list[str]
    environment: dict[str, str]
    folder: Path
    http_port: int
    dicom_port: int
    aet: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def label(self) -> str:
        return f"{self.name}, {self.variant}" if self.variant else self.name

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def target(self) -> Target:
        assert self.process is not None
        return Target(f"http://127.0.0.1:{self.http_port}", "127.0.0.1", self.dicom_port,
                      self.aet, SCU_AET, self.process.pid)

    def __enter__(self) -> Server:
        with open(self.log, "ab") as log:  # the child keeps its own handle
            self.process = subprocess.Popen(
                self.command, cwd=self.folder, env=self.environment, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        """Until REST answers (both servers listen for DICOM first), then a C-ECHO; the
        name gets the version the server reports."""
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command[0]} exited with {self.process.returncode}:"
                                   f"\n{self.log.read_text()[-2000:]}")
            try:
                system = httpx2.get(f"{self.target().url}/system", timeout=1).json()
            except (httpx2.HTTPError, ValueError):
                time.sleep(0.2)
                continue
            self.name = f"{self.name} {system.get('Lanthorn') or system['Version']}"
            self._echo()
            return
        raise TimeoutError(f"{self.command[0]} did not answer within {START_TIMEOUT:.0f} s")

    def _echo(self) -> None:
        """A real association, not a bare TCP connect: the listener must answer DICOM,
        not only have its port open."""
        ae = AE(ae_title=SCU_AET)
        ae.add_requested_context(Verification)
        association = ae.associate("127.0.0.1", self.dicom_port, ae_title=self.aet)
        if not association.is_established:
            raise RuntimeError(f"{self.label} refuses a C-ECHO association")
        try:
            status = association.send_c_echo()
        finally:
            association.release()
        if status.get("Status") != 0:
            raise RuntimeError(f"{self.label} answers C-ECHO with {status}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to its process group (its workers) if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(STOP_TIMEOUT)


def _settings(folder: Path, http_port: int, dicom_port: int, aet: str) -> dict:
    """The configuration both servers get."""
    return {
        "Name": aet.lower(),
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": aet,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "SyncStorageArea": True,
        "StorageAccessOnFind": Config.defaults()["StorageAccessOnFind"],
        "Plugins": [],
        "DicomModalities": {"benchmark": {"AET": SCU_AET, "Host": "127.0.0.1", "Port": 104}},
        "DicomAlwaysAllowStore": False,
        "DicomCheckModalityHost": True,
    }


def _orthanc(root: Path, nodelay: bool) -> Server:
    server = _server("Orthanc", "TCP_NODELAY=1" if nodelay else "", root, {})
    server.command = ["Orthanc", str(server.folder / "config.json")]
    server.environment.update({"TCP_NODELAY": "1"} if nodelay else {})
    return server


def _lanthorn(root: Path, workers: int) -> Server:
    loopback = {"HttpBindAddress": "127.0.0.1", "DicomBindAddress": "127.0.0.1"}
    server = _server("Lanthorn", f"{workers} worker{'s' if workers > 1 else ''}", root, loopback)
    server.command = [sys.executable, "-m", "lanthorn", "serve", "--workers", str(workers),
                      "--config", str(server.folder / "config.json")]
    return server


def _server(name: str, variant: str, root: Path, extra: dict) -> Server:
    """A server (without its command yet) in a new folder with its config.json, on free
    ports, with an environment that cannot change its configuration."""
    folder = Path(tempfile.mkdtemp(prefix=f"{name.lower()}-", dir=root))
    http_port, dicom_port = free_port(), free_port()
    settings = {**_settings(folder, http_port, dicom_port, name.upper()), **extra}
    (folder / "config.json").write_text(json.dumps(settings, indent=1))
    environment = {key: value for key, value in os.environ.items()
                   if key != "TCP_NODELAY" and not key.startswith("LANTHORN")}
    return Server(name, variant, [], environment, folder, http_port, dicom_port, name.upper())


def _servers(root: Path, workers: list[int]) -> list[Server]:
    return [_orthanc(root, nodelay=False), _orthanc(root, nodelay=True),
            *[_lanthorn(root, n) for n in workers]]


def compare(root: Path, workers: list[int], options: Options) -> dict[str, list[Metric]]:
    """Each server in turn (so that they never compete for the CPU), then removed."""
    results = {}
    for server in _servers(root, workers):
        with server:
            print(f"--- {server.label}", file=sys.stderr, flush=True)
            results[server.label] = benchmark(server.target(), options)
        shutil.rmtree(server.folder)
        os.sync()  # the next server starts without this one's write-back in progress
    return results


def comparison_table(results: dict[str, list[Metric]]) -> str:
    """Medians side by side; each Lanthorn column over the better Orthanc column."""
    by_label = {label: {m.name: m for m in metrics} for label, metrics in results.items()}
    orthancs = [label for label in results if label.startswith("Orthanc")]
    lanthorns = [label for label in results if label.startswith("Lanthorn")]
    names = dict.fromkeys(m.name for metrics in results.values() for m in metrics)
    rows = []
    for name in names:
        cells = {label: metrics.get(name) for label, metrics in by_label.items()}
        unit = next(m.unit for m in cells.values() if m)
        best = _best([cells[label] for label in orthancs])
        ratios = [_ratio(cells[label], best) for label in lanthorns]
        rows.append([name, unit, *[_cell(m) for m in cells.values()], *ratios])
    ratio_titles = [f"{label.split(', ')[-1]} / Orthanc" for label in lanthorns]
    return markdown_table(["step", "unit", *results, *ratio_titles], rows)


def _cell(metric: Metric | None) -> str:
    return "n/a" if metric is None or metric.median is None else number(metric.median)


def _best(metrics: list[Metric | None]) -> Metric | None:
    measured = [m for m in metrics if m and m.median is not None]
    if not measured:
        return None
    pick = max if measured[0].higher_is_better else min
    return pick(measured, key=lambda m: m.median)


def _ratio(metric: Metric | None, best: Metric | None) -> str:
    if not metric or not best or metric.median is None or not best.median:
        return ""
    return f"{metric.median / best.median:.2f}"


def notes(results: dict[str, list[Metric]]) -> list[str]:
    """Why some cells are n/a, once per server and reason."""
    found = {f"{label}: {m.note}" for label, metrics in results.items()
             for m in metrics if m.note}
    return sorted(found)


def machine(folder: Path) -> dict:
    """What the numbers were measured on."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                  if line.startswith("model name")), platform.processor())
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    resolved = str(folder.resolve())
    mount, kind = max((m for m in mounts if resolved.startswith(m[0].rstrip("/") + "/")),
                      key=lambda m: len(m[0]))
    return {"cpus": os.cpu_count(), "cpu": model, "memory_gib": round(memory_kb / 2**20, 1),
            "filesystem": f"{kind} ({mount})", "kernel": platform.release(),
            "python": platform.python_version()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    parser.add_argument("--workers", type=int, nargs="+", default=[1],
                        help="run Lanthorn once per value of --workers")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the servers' temporary folders go (its disk is measured)")
    args = parser.parse_args()
    if not shutil.which("Orthanc"):
        print("Orthanc is not installed: apt-get install orthanc orthanc-dicomweb")
        return 1
    options = options_from(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop the servers
    root = Path(tempfile.mkdtemp(prefix="lanthorn-compare-", dir=args.workdir))
    try:
        host = machine(root)
        limits = ceilings(list(options.datasets), root, options.repeat, options.cold)
        results = compare(root, args.workers, options)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(" ".join(f"{key}: {value}," for key, value in host.items()).rstrip(","))
    print(comparison_table(results))
    print("\n".join(["", *notes(results), ""]))
    print(results_table(limits))
    if args.json:
        args.json.write_text(json.dumps({
            "machine": host, "arguments": sys.argv[1:],
            "servers": {label: [m.as_json() for m in ms] for label, ms in results.items()},
            "ceilings": [m.as_json() for m in limits]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
