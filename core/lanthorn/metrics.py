"""Metrics for ``/tools/metrics-prometheus``: gauges that the core and plugins set in
their ``refresh_metrics`` hook, just before each scrape, rendered in Prometheus' text
format (``name value timestamp-in-ms`` per line, as Orthanc writes them).

Whether metrics are collected (``MetricsEnabled``, ``PUT /tools/metrics``) is a
setting of each process, like the log level.
"""

from __future__ import annotations

import re
import threading
import time

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


class Metrics:
    """Gauges by name, each with the time it was last set."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._gauges: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def set(self, name: str, value: float) -> None:
        """Set a gauge (names as Prometheus wants them, e.g. ``lanthorn_my_plugin_queue``)."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"not a Prometheus metric name: {name!r}")
        with self._lock:
            self._gauges[name] = (value, int(time.time() * 1000))

    def get(self, name: str) -> float | None:
        with self._lock:
            found = self._gauges.get(name)
        return found[0] if found else None

    def render(self) -> str:
        with self._lock:
            gauges = sorted(self._gauges.items())
        return "".join(f"{name} {_number(value)} {stamp}\n" for name, (value, stamp) in gauges)


def _number(value: float) -> str:
    if isinstance(value, bool) or float(value).is_integer():
        return str(int(value))
    return f"{value:.9g}"
