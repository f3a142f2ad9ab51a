"""The Lua plugin against a real server: the Orthanc Book's sample scripts, the
execute-script route, and how script errors are reported."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from lua_support import StoreSCP, config_with_sample, sample_peer, wait_for  # noqa: F401

import lanthorn_lua
from lanthorn import Origin, Server
from lanthorn.config import Config
from lanthorn.testing import make_instance

SCRIPTS = Path(__file__).parent / "scripts"

pytestmark = pytest.mark.lanthorn_plugins(lanthorn_lua)


def scripts(*names: str) -> dict[str, Any]:
    return {"LuaScripts": [str(SCRIPTS / name) for name in names]}


def execute(client: Any, code: str) -> str:
    reply = client.post("/tools/execute-script", content=code)
    assert reply.status_code == 200, reply.text
    return reply.text


@pytest.mark.lanthorn_config(ExecuteLuaEnabled=True)
def test_execute_script_round_trip(lanthorn_client: Any) -> None:
    lanthorn_client.post("/instances", content=make_instance(PatientID="P1"))
    printed = execute(lanthorn_client, """
        local system = ParseJson(RestApiGet('/system'))
        print(system['Version'] == GetOrthancVersion(), #ParseJson(RestApiGet('/patients')))
        print(DumpJson(ParseJson('{"a": [1, 2], "b": "c"}')))
        print(string.match(GenerateDicomUid(), '^[0-9.]+$') ~= nil)
        print(RestApiGet('/no-such-route'))
        PrintRecursive({ key = 'value' })
    """)
    lines = printed.splitlines()
    assert lines[0] == "true\t1"
    assert json.loads(lines[1]) == {"a": [1, 2], "b": "c"}
    assert lines[2:4] == ["true", "nil"]
    assert json.loads("".join(lines[4:])) == {"key": "value"}


@pytest.mark.lanthorn_config(ExecuteLuaEnabled=True)
def test_execute_script_reports_lua_errors(lanthorn_client: Any) -> None:
    reply = lanthorn_client.post("/tools/execute-script", content="local x = nil\nprint(x.y)")
    assert reply.status_code == 400
    assert "execute-script:2: attempt to index a nil value" in reply.json()["Details"]
    assert execute(lanthorn_client, "print('still usable')") == "still usable\n"


def test_execute_script_is_disabled_by_default(lanthorn_client: Any) -> None:
    reply = lanthorn_client.post("/tools/execute-script", content="print(1)")
    assert reply.status_code == 403
    assert "ExecuteLuaEnabled" in reply.json()["Details"]


@pytest.mark.lanthorn_config(ExecuteLuaEnabled=True, **scripts("state.lua"))
def test_scripts_share_one_state_and_get_callbacks(lanthorn_client: Any) -> None:
    instance = lanthorn_client.post("/instances", content=make_instance(PatientID="P7")).json()
    calls = "print(table.concat(calls, ','))"
    wait_for(lambda: "OnStablePatient P7" in execute(lanthorn_client, calls))
    lanthorn_client.delete(f"/instances/{instance['ID']}")
    printed = wait_for(lambda: "OnDeletedInstance" in execute(lanthorn_client, calls)
                       and execute(lanthorn_client, calls))
    assert printed.strip().split(",") == ["Initialize", "OnStablePatient P7",
                                          f"OnDeletedInstance {instance['ID']}"]


@pytest.mark.lanthorn_config(**scripts("autorouting.lua"))
def test_auto_routing_sends_through_store_jobs(lanthorn_client: Any, peer: StoreSCP) -> None:
    sent = [make_instance(PatientID="ROUTE", SOPInstanceUID=f"1.2.3.{n}") for n in (1, 2)]
    for data in sent:
        assert lanthorn_client.post("/instances", content=data).status_code == 200
    wait_for(lambda: len(peer.received) == 2)
    assert sorted(r.sop_instance for r in peer.received) == ["1.2.3.1", "1.2.3.2"]
    jobs = lanthorn_client.get("/jobs?expand").json()
    assert [job["Type"] for job in jobs] == ["DicomModalityStore"] * 2


@pytest.mark.lanthorn_config(JobRetryCount=1, JobRetryDelay=0.2, **scripts("autorouting.lua"))
def test_failed_routing_stays_visible_in_jobs(lanthorn_client: Any, peer: StoreSCP) -> None:
    peer.status = 0xA700  # out of resources: the send fails, is retried, then fails
    lanthorn_client.post("/instances", content=make_instance(SOPInstanceUID="1.2.3.9"))
    jobs = wait_for(lambda: [j for j in lanthorn_client.get("/jobs?expand").json()
                             if j["State"] == "Failure"])
    assert jobs[0]["Type"] == "DicomModalityStore"
    assert len(peer.received) == 2  # refused twice: the first attempt and one retry
    peer.status = 0x0000
    assert lanthorn_client.post(f"/jobs/{jobs[0]['ID']}/resubmit").status_code == 200
    wait_for(lambda: lanthorn_client.get(f"/jobs/{jobs[0]['ID']}").json()["State"]
             == "Success")
    assert [r.sop_instance for r in peer.received] == ["1.2.3.9"] * 3


@pytest.mark.lanthorn_config(**scripts("modality_filter.lua"))
def test_modality_filter(lanthorn_client: Any) -> None:
    assert lanthorn_client.post("/instances", content=make_instance(Modality="CT")
                                ).status_code == 200
    refused = lanthorn_client.post("/instances", content=make_instance(Modality="MR"))
    assert refused.status_code == 403
    assert "ReceivedInstanceFilter refused" in refused.json()["Details"]
    assert len(lanthorn_client.get("/instances").json()) == 1


@pytest.mark.lanthorn_config(**scripts("anonymize_forward.lua"))
def test_anonymize_and_forward(lanthorn_client: Any, peer: StoreSCP) -> None:
    lanthorn_client.post("/instances", content=make_instance(PatientID="SECRET",
                                                             PatientName="DOE^JANE"))
    wait_for(lambda: peer.received)
    forwarded = pydicom.dcmread(io.BytesIO(peer.received[0].data_set), force=True)
    assert str(forwarded.PatientName) == "Anonymous SECRET"
    # The original is deleted; the anonymized copy stays (the job sends it from here).
    patients = wait_for(lambda: len(lanthorn_client.get("/patients").json()) == 1
                        and lanthorn_client.get("/patients?expand").json())
    assert patients[0]["MainDicomTags"]["PatientName"] == "Anonymous SECRET"


def test_write_to_disk_copies_stable_series(lanthorn_config: Config, tmp_path: Path,
                                            lanthorn_make_server: Callable[..., Server]) -> None:
    target = tmp_path / "copies"
    settings = tmp_path / "target.lua"
    settings.write_text(f"TARGET = '{target}'\n")
    config = lanthorn_config.with_overrides(
        LuaScripts=[str(settings), str(SCRIPTS / "write_to_disk.lua")])
    server = lanthorn_make_server(config, [lanthorn_lua])
    server.start()
    try:
        files = [make_instance(PatientID="DISK", StudyDate="20240102",
                               SeriesDescription="AXIAL 5MM", SeriesInstanceUID="1.2.9",
                               StudyInstanceUID="1.2.8", seed=n) for n in range(2)]
        ids = [server.ingest.store(data, Origin()).id for data in files]
        folder = target / "DISK" / "20240102" / "AXIAL_5MM"
        wait_for(lambda: len(list(folder.glob("*.dcm"))) == 2, timeout=30)
        assert {(folder / f"{i}.dcm").read_bytes() for i in ids} == set(files)
    finally:
        server.stop()
        server.close()


@pytest.mark.lanthorn_config(**scripts("broken.lua"))
def test_script_errors_name_file_and_line(lanthorn_client: Any,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="lanthorn_lua")
    assert lanthorn_client.post("/instances", content=make_instance(PatientID="KEEP")
                                ).status_code == 200
    wait_for(lambda: "cannot route KEEP" in caplog.text)
    assert "broken.lua:3:" in caplog.text
    assert len(lanthorn_client.get("/instances").json()) == 1  # the instance is kept
    refused = lanthorn_client.post("/instances", content=make_instance(PatientID="REFUSE"))
    assert refused.status_code == 403
    assert "broken.lua:9: attempt to index a nil value" in refused.json()["Details"]


def test_broken_script_refuses_start_up(lanthorn_config: Config, tmp_path: Path,
                                        lanthorn_make_server: Callable[..., Server]) -> None:
    script = tmp_path / "syntax.lua"
    script.write_text("function Initialize(\n")
    server = lanthorn_make_server(lanthorn_config.with_overrides(LuaScripts=[str(script)]),
                                  [lanthorn_lua])
    try:
        with pytest.raises(Exception, match="syntax.lua:2"):
            server.start()
    finally:
        server.close()


def test_lua_options_are_known_at_top_level(lanthorn_config: Config,
                                            lanthorn_make_server: Callable[..., Server],
                                            caplog: pytest.LogCaptureFixture) -> None:
    config = lanthorn_config.with_overrides(LuaScripts=[], LuaHeartBeatPeriod=0,
                                            ExecuteLuaEnabled=False)
    lanthorn_make_server(config, [lanthorn_lua]).close()
    assert "Lua" not in caplog.text
