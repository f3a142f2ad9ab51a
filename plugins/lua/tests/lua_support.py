"""Shared by the Lua tests and the Python recipes' tests, which import the fixtures
(not a conftest: the core's tests import theirs by that name): a real storage SCP known
to the server as the modality "sample", and polling for background work. The core's
test peers (``tests/dimse_peers.py``) serve these tests too."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))

from dimse_peers import PEER_AET, SCU_AET, StoreSCP, listening, scu  # noqa: E402

from lanthorn.config import Config  # noqa: E402

__all__ = ["SCU_AET", "StoreSCP", "config_with_sample", "listening", "sample_peer", "scu",
           "wait_for", "with_sample"]


@pytest.fixture(name="peer")
def sample_peer() -> Iterator[StoreSCP]:
    with StoreSCP().running() as scp:
        yield scp


@pytest.fixture(name="lanthorn_config")
def config_with_sample(lanthorn_config: Config, peer: StoreSCP) -> Config:
    return with_sample(lanthorn_config, peer)


def with_sample(config: Config, peer: StoreSCP) -> Config:
    """``config`` knowing ``peer`` as the modality "sample"."""
    return config.with_overrides(DicomModalities={"sample": [PEER_AET, "127.0.0.1", peer.port]})


def wait_for(condition: Callable[[], Any], timeout: float = 20) -> Any:
    """The condition's first true value, polled until ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")
