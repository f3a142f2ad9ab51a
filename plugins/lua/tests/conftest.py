"""Shared by the Lua tests and the Python recipes' tests: a real storage SCP known to
the server as the modality "sample". The core's test peers (``tests/dimse_peers.py``)
serve these tests too."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))

from dimse_peers import PEER_AET, StoreSCP  # noqa: E402

from lanthorn.config import Config  # noqa: E402


@pytest.fixture
def peer() -> Iterator[StoreSCP]:
    with StoreSCP().running() as scp:
        yield scp


@pytest.fixture
def lanthorn_config(lanthorn_config: Config, peer: StoreSCP) -> Config:
    return lanthorn_config.with_overrides(
        DicomModalities={"sample": [PEER_AET, "127.0.0.1", peer.port]})
