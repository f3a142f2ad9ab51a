"""The Python recipes of the README (``plugins/lua/examples``), loaded as the core loads
site plugins (the ``Plugins`` option), against a real server and storage SCP."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from lua_support import StoreSCP, config_with_sample, sample_peer, wait_for  # noqa: F401

from lanthorn.testing import make_instance

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def recipe(name: str) -> pytest.MarkDecorator:
    return pytest.mark.lanthorn_config(Plugins=[str(EXAMPLES / f"{name}.py")])


@recipe("autorouting")
def test_autorouting(lanthorn_client: Any, peer: StoreSCP) -> None:
    lanthorn_client.post("/instances", content=make_instance(SOPInstanceUID="1.2.3.4"))
    wait_for(lambda: peer.received)
    assert peer.received[0].sop_instance == "1.2.3.4"
    jobs = wait_for(lambda: lanthorn_client.get("/jobs?expand").json())
    assert jobs[0]["Type"] == "DicomModalityStore"
    assert len(lanthorn_client.get("/instances").json()) == 1


@recipe("reject_by_modality")
def test_reject_by_modality(lanthorn_client: Any) -> None:
    assert lanthorn_client.post("/instances", content=make_instance(Modality="CT")
                                ).status_code == 200
    refused = lanthorn_client.post("/instances", content=make_instance(Modality="MR"))
    assert refused.status_code == 403
    assert refused.json()["Details"] == 'modality "MR" is not accepted here'
    assert len(lanthorn_client.get("/instances").json()) == 1


@recipe("anonymize_forward")
def test_anonymize_then_forward(lanthorn_client: Any, peer: StoreSCP) -> None:
    lanthorn_client.post("/instances", content=make_instance(PatientName="DOE^JANE",
                                                             PatientID="SECRET"))
    wait_for(lambda: peer.received)
    forwarded = pydicom.dcmread(io.BytesIO(peer.received[0].data_set), force=True)
    assert str(forwarded.PatientName) == "Anonymous"
    assert forwarded.PatientID != "SECRET"
    [patient] = lanthorn_client.get("/patients?expand").json()  # the original is deleted
    assert patient["MainDicomTags"]["PatientName"] == "Anonymous"


@recipe("delete_after_forward")
def test_delete_after_forward(lanthorn_client: Any, peer: StoreSCP) -> None:
    lanthorn_client.post("/instances", content=make_instance(SOPInstanceUID="1.2.3.5"))
    [job] = wait_for(lambda: [j for j in lanthorn_client.get("/jobs?expand").json()
                              if j["State"] == "Success"])
    assert job["Type"] == "ForwardThenDelete"
    assert [r.sop_instance for r in peer.received] == ["1.2.3.5"]
    assert lanthorn_client.get("/instances").json() == []


@recipe("delete_after_forward")
@pytest.mark.lanthorn_config(JobRetryCount=1, JobRetryDelay=0.2)
def test_delete_after_forward_keeps_what_the_peer_refused(lanthorn_client: Any,
                                                          peer: StoreSCP) -> None:
    peer.status = 0xA700
    lanthorn_client.post("/instances", content=make_instance())
    wait_for(lambda: [j for j in lanthorn_client.get("/jobs?expand").json()
                      if j["State"] == "Failure"])
    assert len(peer.received) == 2  # the first attempt and one retry
    assert len(lanthorn_client.get("/instances").json()) == 1
