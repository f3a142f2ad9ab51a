"""``/tools/metrics`` and ``/tools/metrics-prometheus``: the core's gauges in Orthanc's
names and Prometheus' text format, and switching collection off and on."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

import lanthorn
from lanthorn.metrics import Metrics
from lanthorn.testing import make_instance

LINE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*) (-?[0-9.e+-]+) ([0-9]{13})")


def scrape(client: TestClient) -> dict[str, float]:
    response = client.get("/tools/metrics-prometheus")
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert all(LINE.fullmatch(line) for line in lines), response.text
    return {line.split()[0]: float(line.split()[1]) for line in lines}


def test_core_gauges(lanthorn_server: lanthorn.Server, lanthorn_client: TestClient) -> None:
    empty = scrape(lanthorn_client)
    zeros = ("orthanc_count_patients", "orthanc_count_instances", "orthanc_disk_size_mb",
             "orthanc_jobs_pending", "orthanc_last_change")
    assert [empty[name] for name in zeros] == [0] * len(zeros)
    data = [make_instance(PatientID=p, rows=64, columns=64) for p in ("A", "A", "B")]
    for item in data:
        lanthorn_client.post("/instances", content=item)
    gauges = scrape(lanthorn_client)
    assert (gauges["orthanc_count_patients"], gauges["orthanc_count_studies"],
            gauges["orthanc_count_series"], gauges["orthanc_count_instances"]) == (2, 3, 3, 3)
    assert gauges["orthanc_disk_size_mb"] == pytest.approx(
        sum(map(len, data)) / 1024 / 1024, rel=1e-6)
    assert gauges["orthanc_uncompressed_size_mb"] == gauges["orthanc_disk_size_mb"]
    assert gauges["orthanc_last_change"] == lanthorn_server.index.last_change().seq
    assert gauges["orthanc_up_time_s"] >= 0


@pytest.mark.lanthorn_config(MetricsEnabled=False)
def test_metrics_can_be_switched_on_and_off(lanthorn_client: TestClient) -> None:
    assert lanthorn_client.get("/tools/metrics").text == "0"
    assert lanthorn_client.get("/tools/metrics-prometheus").text == ""
    assert lanthorn_client.put("/tools/metrics", content="1").status_code == 200
    assert lanthorn_client.get("/tools/metrics").text == "1"
    assert "orthanc_count_patients" in scrape(lanthorn_client)
    assert lanthorn_client.put("/tools/metrics", content="maybe").status_code == 400
    assert lanthorn_client.get("/tools/metrics").text == "1"


def test_rendering_of_values_and_names() -> None:
    metrics = Metrics()
    metrics.set("b_ratio", 1 / 3)
    metrics.set("a_count", 12.0)
    lines = metrics.render().splitlines()
    assert [line.rsplit(" ", 1)[0] for line in lines] == ["a_count 12", "b_ratio 0.333333333"]
    with pytest.raises(ValueError, match="metric name"):
        metrics.set("has space", 1)
