"""What this machine can do with the benchmark's bytes when no DICOM server is involved.

- disk: write the dataset's files into a folder, without fsync, and with an fsync of each
  file and then of its folder (what a server that acknowledges durably does per instance);
  and read them back from the page cache (what an archive of warm files can stream at
  most); with ``cold``, read them from the disk after dropping the page cache, file by
  file (as ``cat``) and as one file of the same bytes (as ``dd``: the disk's throughput);
- loopback TCP: send the files one after the other over one connection on 127.0.0.1,
  waiting for a one-byte answer after each (what a client uploading instance after
  instance waits for), with Nagle's algorithm off on both ends.

One thread each: these bound what one client or one writer sees, not the machine's total.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from generate import Spec
from run import Metric, drop_page_cache

SOCKET_TIMEOUT = 30.0


def ceilings(specs: list[Spec], folder: Path, repeat: int, cold: bool = False) -> list[Metric]:
    """The ceilings for each dataset's files, ``repeat`` runs each."""
    probes: dict[str, Callable[[list[bytes], Path], float]] = {
        "disk write, no fsync": lambda files, into: _write(files, into, sync=False),
        "disk write, fsync file + folder": lambda files, into: _write(files, into, sync=True),
        "disk read (page cache)": _read,
        "loopback TCP, answer per file": lambda files, _: _loopback(files),
    }
    if cold:
        probes["disk read, cold, file by file"] = lambda files, into: _read(files, into, True)
        probes["disk read, cold, as one file"] = lambda files, into: _read([b"".join(files)],
                                                                         into, True)
    metrics = []
    for spec in specs:
        files = [data for _, data in spec.with_seed("ceilings").files()]
        for name, probe in probes.items():
            metric = Metric(f"{name} [{spec}]", "inst/s",
                            megabytes_each=sum(map(len, files)) / len(files) / 1e6)
            for _ in range(repeat):
                with tempfile.TemporaryDirectory(dir=folder) as into:
                    os.sync()  # no write-back of earlier files (ours or a server's) in the clock
                    metric.values.append(len(files) / probe(files, Path(into)))
            metrics.append(metric)
    return metrics


def _write(files: list[bytes], folder: Path, sync: bool) -> float:
    """Seconds to write every file (and fsync it and the folder when ``sync``)."""
    start = time.perf_counter()
    for number, data in enumerate(files):
        with open(folder / f"{number:06d}.dcm", "wb") as file:
            file.write(data)
            if sync:
                os.fsync(file.fileno())
        if sync:
            descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
    return time.perf_counter() - start


def _read(files: list[bytes], folder: Path, cold: bool = False) -> float:
    """Seconds to read every file back, 64 KB at a time, after writing it (unclocked),
    from the page cache or, when ``cold``, from the disk."""
    _write(files, folder, sync=False)
    if cold:
        drop_page_cache()
    start = time.perf_counter()
    for number in range(len(files)):
        with open(folder / f"{number:06d}.dcm", "rb") as file:
            while file.read(65536):
                pass
    return time.perf_counter() - start


def _loopback(files: list[bytes]) -> float:
    """Seconds to send every file and get a one-byte answer for each."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        receiver = threading.Thread(target=_receive, args=(listener, [len(f) for f in files]))
        receiver.start()
        with socket.create_connection(listener.getsockname(), timeout=SOCKET_TIMEOUT) as sender:
            sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            start = time.perf_counter()
            for data in files:
                sender.sendall(data)
                if sender.recv(1) != b"k":
                    raise ConnectionError("the loopback receiver stopped answering")
            elapsed = time.perf_counter() - start
        receiver.join(SOCKET_TIMEOUT)
    return elapsed


def _receive(listener: socket.socket, sizes: list[int]) -> None:
    connection, _ = listener.accept()
    with connection:
        connection.settimeout(SOCKET_TIMEOUT)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = memoryview(bytearray(max(sizes)))
        for size in sizes:
            received = 0
            while received < size:
                count = connection.recv_into(buffer[received:size])
                if not count:
                    return
                received += count
            connection.sendall(b"k")
