"""``POST /tools/reset``: ``lanthorn serve`` (one process, or a supervisor and its
workers) stops cleanly and starts again in the same process, reading its configuration
files anew; ``/tools/shutdown`` stops it the same way for good. A server not run by
``lanthorn serve`` refuses both."""

from __future__ import annotations

import json
import time

import httpx2
import pytest
from starlette.testclient import TestClient

from lanthorn.testing import ServerProcess, make_instance, wait_for_exit


def wait_for_name(process: ServerProcess, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.process is not None and process.process.poll() is None, \
            process.log_path.read_text()
        try:
            if httpx2.get(process.url + "/system", timeout=1).json()["Name"] == name:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(process.log_path.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["single", "workers"])
def test_reset_restarts_with_the_configuration_read_again(
        lanthorn_process: ServerProcess, workers: list[str]) -> None:
    lanthorn_process.extra_args = workers
    lanthorn_process.start()
    stored = httpx2.post(lanthorn_process.url + "/instances", content=make_instance(),
                         timeout=10).json()["ID"]
    options = json.loads(lanthorn_process.config_path.read_text())
    lanthorn_process.config_path.write_text(json.dumps({**options, "Name": "RENAMED"}))
    answer = httpx2.post(lanthorn_process.url + "/tools/reset", timeout=10)
    assert (answer.status_code, answer.json()) == (200, {})
    wait_for_name(lanthorn_process, "RENAMED")
    assert httpx2.get(f"{lanthorn_process.url}/instances/{stored}", timeout=10).status_code \
        == 200
    assert lanthorn_process.stop() == 0


def test_reset_is_refused_outside_lanthorn_serve(lanthorn_client: TestClient) -> None:
    refused = lanthorn_client.post("/tools/reset")
    assert refused.status_code == 400 and "lanthorn serve" in refused.json()["Details"]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["single", "workers"])
def test_shutdown_stops_every_process(lanthorn_process: ServerProcess,
                                      workers: list[str]) -> None:
    lanthorn_process.extra_args = workers
    lanthorn_process.start()
    pids = [lanthorn_process.process.pid, *lanthorn_process.workers()]
    answer = httpx2.post(lanthorn_process.url + "/tools/shutdown", timeout=10)
    assert (answer.status_code, answer.json()) == (200, {})
    assert lanthorn_process.process.wait(60) == 0
    assert wait_for_exit(pids, 30) == []


def test_shutdown_is_refused_outside_lanthorn_serve(lanthorn_client: TestClient) -> None:
    refused = lanthorn_client.post("/tools/shutdown")
    assert refused.status_code == 400 and "lanthorn serve" in refused.json()["Details"]
