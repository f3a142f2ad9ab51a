"""``lanthorn serve``: uvicorn for REST plus the DICOM listener, stopped cleanly on signals.

With ``Workers`` > 1 the parent binds the HTTP port, forks that many server processes
and supervises them; each serves HTTP on the shared socket and DICOM on the same port
(bound by the parent too). They share nothing but the index and the storage area, exactly as
several machines on one database would: background duties go to the holder of a lease.

On SIGINT/SIGTERM uvicorn stops accepting and lets in-flight requests finish; the DICOM
listener then stops accepting and gives open associations time to finish their current
operation before they are aborted.

``POST /tools/reset`` restarts: the server (with ``Workers``, the supervisor and all its
workers) stops as on SIGTERM, then executes its own command line again, so the
configuration files are read anew; the process ID stays the same. ``POST /tools/shutdown``
stops it the same way, for good.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import uvicorn

from .config import Config, ConfigError
from .rest.protocol import protocol_class
from .server import Server

log = logging.getLogger(__name__)

#: How long open DICOM associations may keep going after a stop is asked for.
ASSOCIATION_GRACE_SECONDS = 10.0
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
#: Set when a restart (``/tools/reset``) was asked for in this process.
_restart = threading.Event()


def serve(config: Config, workers: int | None = None) -> int:
    https_options(config)  # a bad certificate stops start-up before anything listens
    count = int(workers or config["Workers"])
    if count <= 1:
        run_server(config, None)
        status = 0
    else:
        # Check the configuration and migrate the index once, before any process forks.
        Server(config).close()
        sockets = Sockets(_bind_http(config) if config["HttpServerEnabled"] else None,
                          _bind_dicom(config) if config["DicomServerEnabled"] else None)
        status = _supervise(config, sockets, count)
        sockets.close()
    if _restart.is_set():
        log.warning("restarting (/tools/reset)")
        logging.shutdown()
        os.execv(sys.executable, sys.orig_argv)
    return status


def _ask_stop(supervisor: int | None, restart: bool) -> None:
    """What ``/tools/reset`` and ``/tools/shutdown`` call: stop this process, or the
    supervisor (which stops every worker), and start again if ``restart``."""
    if restart:
        _restart.set()
    os.kill(supervisor or os.getpid(),
            signal.SIGHUP if restart and supervisor else signal.SIGTERM)


@dataclass(frozen=True)
class Sockets:
    """The ports a supervisor binds for its workers."""

    http: socket.socket | None
    dicom: socket.socket | None

    def close(self) -> None:
        for sock in (self.http, self.dicom):
            if sock is not None:
                sock.close()


def run_server(config: Config, sockets: Sockets | None,
               supervisor: int | None = None) -> None:
    """One server process: start, serve until a signal, stop cleanly."""
    server = Server(config)
    server.request_stop = lambda restart: _ask_stop(supervisor, restart)
    server.start()
    listener = None
    try:
        if config["DicomServerEnabled"]:
            from .dimse.scp import start_listener

            listener = start_listener(server, sockets.dicom if sockets else None)
            log.info("DICOM listener %s on port %s", config["DicomAet"], config["DicomPort"])
        if config["HttpServerEnabled"]:
            _run_http(server, sockets.http if sockets else None)
        else:
            _wait_for_signal()
    finally:
        if listener is not None:
            _stop_listener(listener)
        server.stop()
        server.close()


def _bind_http(config: Config) -> socket.socket:
    return _bind(config["HttpBindAddress"], int(config["HttpPort"]), backlog=2048)


def _bind_dicom(config: Config) -> socket.socket:
    """The DICOM port, bound once for all workers (``SharedPortServer`` says why)."""
    return _bind(config["DicomBindAddress"], int(config["DicomPort"]), backlog=128)


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    """A listening socket the workers inherit."""
    host = host or "0.0.0.0"
    # IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on sockets that say they are TCP,
    # and without it every keep-alive answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                         socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def _run_http(server: Server, http_socket: socket.socket | None) -> None:
    """Serve until SIGINT/SIGTERM.

    uvicorn re-raises the signal it caught once it has stopped; with our own (no-op)
    handlers installed that re-raise is harmless and the clean-up still runs.
    """
    config = server.config
    http = _HttpServer(max(int(config["HttpThreadsCount"]), 1), uvicorn.Config(
        server.app,
        host=config["HttpBindAddress"] or "0.0.0.0",
        port=int(config["HttpPort"]),
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=30,
        timeout_keep_alive=int(config["HttpTimeout"]) if config["KeepAlive"] else 0,
        access_log=False,
        proxy_headers=False,  # the peer address is the client (RemoteAccessAllowed)
        http=protocol_class(int(config["HttpMaximumHeaderSize"]) * 1024),
        **https_options(config),
    ))
    for sig in (signal.SIGINT, signal.SIGTERM):  # a stop asked before uvicorn listens
        signal.signal(sig, lambda *_: setattr(http, "should_exit", True))
    log.info("REST API on port %s (process %d)", config["HttpPort"], os.getpid())
    http.run(sockets=[http_socket] if http_socket else None)


class _HttpServer(uvicorn.Server):
    """uvicorn, with ``HttpThreadsCount`` threads for the handlers that block (Starlette
    runs them in anyio's thread pool, 40 threads unless told otherwise)."""

    def __init__(self, threads: int, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.threads = threads

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # The pool belongs to the event loop: sized here, in the loop, before any request.
        anyio.to_thread.current_default_thread_limiter().total_tokens = self.threads
        await super().startup(sockets)


def https_options(config: Config) -> dict[str, Any]:
    """uvicorn's TLS arguments from ``Ssl*`` (none without ``SslEnabled``), checked by
    loading them once: a missing or wrong file is a ConfigError, not a worker crash."""
    if not config["SslEnabled"]:
        return {}
    options: dict[str, Any] = {"ssl_certfile": config["SslCertificate"]}
    if config["SslVerifyPeers"]:
        options |= {"ssl_cert_reqs": ssl.CERT_REQUIRED,
                    "ssl_ca_certs": config["SslTrustedClientCertificates"]}
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH,
                                             cafile=options.get("ssl_ca_certs"))
        context.load_cert_chain(options["ssl_certfile"])  # the key follows the certificate
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"HTTPS (SslEnabled): cannot load the certificates: {exc}") from None
    return options


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def _stop_listener(listener) -> None:  # noqa: ANN001 - a pynetdicom ThreadedAssociationServer
    associations = list(listener.active_associations)
    listener.shutdown()
    deadline = time.monotonic() + ASSOCIATION_GRACE_SECONDS
    for association in associations:
        association.join(max(0.0, deadline - time.monotonic()))
        if association.is_alive():
            association.abort()


def _supervise(config: Config, sockets: Sockets, count: int) -> int:
    """Keep ``count`` worker processes running until SIGINT/SIGTERM, then stop them."""
    context = multiprocessing.get_context("fork")
    stopping = threading.Event()

    def spawn() -> multiprocessing.Process:
        process = context.Process(target=_worker, args=(config, sockets, os.getpid()),
                                  daemon=False)
        process.start()
        return process

    def request_stop(*_: object) -> None:
        stopping.set()

    def request_restart(*_: object) -> None:  # a worker answered /tools/reset
        _restart.set()
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGHUP, request_restart)
    processes = [spawn() for _ in range(count)]
    while not stopping.wait(0.5):
        for position, process in enumerate(processes):
            if not process.is_alive():
                log.error("worker %d exited with %s; starting a new one",
                          process.pid, process.exitcode)
                processes[position] = spawn()
    for process in processes:
        if process.is_alive():
            os.kill(process.pid, signal.SIGTERM)
    for process in processes:
        process.join(60)
        if process.is_alive():
            log.error("worker %d did not stop in time; killing it", process.pid)
            process.kill()
    return 0


def _worker(config: Config, sockets: Sockets, supervisor: int) -> None:
    """A worker's entry: the supervisor's signal handlers must not leak into it, and a
    worker must not outlive its supervisor (``kill -9`` of the supervisor would otherwise
    leave it holding the ports)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    _die_with_parent()
    if os.getppid() != supervisor:  # it died before the request above took effect
        return
    run_server(config, sockets, supervisor)


def _die_with_parent() -> None:
    """Ask Linux to send SIGKILL to this process when its parent dies."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        log.warning("cannot tie this worker's life to its supervisor (errno %d)",
                    ctypes.get_errno())
