"""The core's own gauges, set through ``refresh_metrics`` like any plugin's: counts and
sizes from the index, jobs by state, the last change and the up time (Orthanc's names)."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

from ..index.jobs import FAILURE, PENDING, RETRY, RUNNING, SUCCESS
from ..plugins import hookimpl

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..server import Server

MB = 1024 * 1024


@hookimpl
def refresh_metrics(server: Server, metrics: Metrics) -> None:
    statistics = server.index.statistics()
    for level, count in statistics.count_by_level.items():
        metrics.set(f"orthanc_count_{level.plural}", count)
    metrics.set("orthanc_disk_size_mb", statistics.disk_size / MB)
    metrics.set("orthanc_uncompressed_size_mb", statistics.uncompressed_size / MB)
    states = Counter(record.state for record in server.index.jobs.all())
    metrics.set("orthanc_jobs_pending", states[PENDING] + states[RETRY])
    metrics.set("orthanc_jobs_running", states[RUNNING])
    metrics.set("orthanc_jobs_success", states[SUCCESS])
    metrics.set("orthanc_jobs_failed", states[FAILURE])
    metrics.set("orthanc_jobs_completed", states[SUCCESS] + states[FAILURE])
    last = server.index.last_change()
    metrics.set("orthanc_last_change", last.seq if last else 0)
    metrics.set("orthanc_up_time_s", int(time.time() - server.started))

