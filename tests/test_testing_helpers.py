"""``lanthorn.testing``, the helpers the test-suite and plugin authors' tests use."""

from __future__ import annotations

import os
import socket
import subprocess
import sysconfig
from pathlib import Path

import pytest

from lanthorn.testing import FIRST_TEST_PORT, free_port, require_tool


def test_free_ports_are_below_the_ephemeral_range_and_bindable() -> None:
    """A port from the kernel's ephemeral range can become an outgoing connection's
    source port before a server binds it (a flaky "address already in use")."""
    first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert all(FIRST_TEST_PORT <= port < first_ephemeral for port in ports)
    assert len(ports) > 1  # drawn at random, not the same one each time
    for port in ports:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", port))


def test_tools_are_the_systems_not_pynetdicoms_apps_of_the_same_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An activated virtual environment puts its scripts first on the PATH, pynetdicom's
    ``storescu`` among them, whose options are not DCMTK's."""
    scripts = sysconfig.get_path("scripts")
    assert Path(scripts, "storescu").exists()  # pynetdicom's app: what the PATH would find
    monkeypatch.setenv("PATH", os.pathsep.join([scripts, os.environ["PATH"]]))
    found = require_tool("storescu", "dcmtk")
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=True)
    assert "dcmtk" in version.stdout
