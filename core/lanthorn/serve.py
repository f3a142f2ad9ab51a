"""``lanthorn serve``: uvicorn for REST plus the DICOM listener, stopped cleanly on signals.

On SIGINT/SIGTERM uvicorn stops accepting and lets in-flight requests finish; the DICOM
listener then stops accepting and gives open associations time to finish their
current operation before they are aborted.
"""

from __future__ import annotations

import logging
import time

import uvicorn

from .config import Config
from .server import Server

log = logging.getLogger(__name__)

#: How long open DICOM associations may keep going after a stop is asked for.
ASSOCIATION_GRACE_SECONDS = 10.0


def serve(config: Config, workers: int | None = None) -> int:
    server = Server(config)
    server.start()
    listener = None
    try:
        if config["DicomServerEnabled"]:
            from .dimse.scp import start_listener

            listener = start_listener(server)
            log.info("DICOM listener %s on port %s", config["DicomAet"], config["DicomPort"])
        if config["HttpServerEnabled"]:
            _run_http(server)
        else:
            _wait_for_signal()
    finally:
        if listener is not None:
            _stop_listener(listener)
        server.stop()
        server.close()
    return 0


def _run_http(server: Server) -> None:
    config = server.config
    http = uvicorn.Server(uvicorn.Config(
        server.app,
        host=config["HttpBindAddress"] or "0.0.0.0",
        port=int(config["HttpPort"]),
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=30,
        limit_concurrency=None,
        timeout_keep_alive=int(config["HttpTimeout"]) if config["KeepAlive"] else 0,
        access_log=False,
    ))
    log.info("REST API on port %s", config["HttpPort"])
    http.run()


def _wait_for_signal() -> None:
    import signal
    import threading

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
