"""``lanthorn.testing``, the helpers the test-suite and plugin authors' tests use."""

from __future__ import annotations

import socket
from pathlib import Path

from lanthorn.testing import FIRST_TEST_PORT, free_port


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
