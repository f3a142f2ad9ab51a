"""The Lua API against real peers: a second Lanthorn server (``SendToPeer``, the
``Http*`` functions with credentials), a storage SCP (``Delete(SendToModality(...))``),
and the callbacks of metadata changes and jobs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from lua_support import StoreSCP, sample_peer, wait_for, with_sample  # noqa: F401

import lanthorn_lua
from lanthorn.config import Config
from lanthorn.testing import ServerProcess, free_port, make_instance

SCRIPTS = Path(__file__).parent / "scripts"
ROBOT = ("robot", "secret")

pytestmark = pytest.mark.lanthorn_plugins(lanthorn_lua)


def scripts(name: str) -> pytest.MarkDecorator:
    return pytest.mark.lanthorn_config(LuaScripts=[str(SCRIPTS / name)], ExecuteLuaEnabled=True)


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A second Lanthorn server, which wants credentials."""
    folder = tmp_path_factory.mktemp("second")
    process = ServerProcess(folder / "config.json", free_port(), free_port(),
                            folder / "server.log")
    process.config_path.write_text(json.dumps({
        "Name": "SECOND", "StorageDirectory": str(folder / "storage"),
        "HttpPort": process.http_port, "DicomPort": process.dicom_port,
        "HttpBindAddress": "127.0.0.1", "DicomBindAddress": "127.0.0.1",
        "AuthenticationEnabled": True, "RegisteredUsers": dict([ROBOT])}))
    try:
        yield process.start()
    finally:
        process.kill_group()


@pytest.fixture(name="lanthorn_config")
def config_with_peers(lanthorn_config: Config, peer: StoreSCP, second: ServerProcess
                      ) -> Config:
    return with_sample(lanthorn_config, peer).with_overrides(
        OrthancPeers={"second": {"Url": second.url, "Username": ROBOT[0],
                                 "Password": ROBOT[1]}},
        UserMetadata={"Note": 1024}, JobRetryCount=0)


def execute(client: Any, code: str) -> str:
    reply = client.post("/tools/execute-script", content=code)
    assert reply.status_code == 200, reply.text
    return reply.text


@scripts("route_then_delete.lua")
def test_delete_after_send_to_peer(lanthorn_client: Any, second: ServerProcess) -> None:
    sent = make_instance(PatientID="TO-PEER", SOPInstanceUID="1.2.3.77")
    lanthorn_client.post("/instances", content=sent)
    wait_for(lambda: lanthorn_client.get("/instances").json() == [])
    [job] = lanthorn_client.get("/jobs?expand").json()
    assert (job["Type"], job["State"]) == ("OrthancPeerStore", "Success")
    there = httpx2.post(second.url + "/tools/lookup", content="1.2.3.77", auth=ROBOT)
    assert [found["Type"] for found in there.json()] == ["Instance"]


@scripts("route_then_delete.lua")
def test_delete_after_send_to_modality(lanthorn_client: Any, peer: StoreSCP) -> None:
    lanthorn_client.post("/instances", content=make_instance(SOPInstanceUID="1.2.3.78"))
    wait_for(lambda: lanthorn_client.get("/instances").json() == [])
    assert [r.sop_instance for r in peer.received] == ["1.2.3.78"]


@scripts("route_then_delete.lua")
def test_no_delete_when_the_send_fails(lanthorn_client: Any, peer: StoreSCP) -> None:
    peer.status = 0xA700  # the peer refuses: the job fails, the instance stays
    lanthorn_client.post("/instances", content=make_instance(SOPInstanceUID="1.2.3.79"))
    [job] = wait_for(lambda: [j for j in lanthorn_client.get("/jobs?expand").json()
                              if j["State"] == "Failure"])
    assert len(lanthorn_client.get("/instances").json()) == 1
    peer.status = 0x0000  # resubmitted, it succeeds: the deletion asked for happens then
    assert lanthorn_client.post(f"/jobs/{job['ID']}/resubmit").status_code == 200
    wait_for(lambda: lanthorn_client.get("/instances").json() == [])
    assert [r.sop_instance for r in peer.received] == ["1.2.3.79"] * 2


@pytest.mark.lanthorn_config(ExecuteLuaEnabled=True)
def test_delete_of_a_finished_job_deletes_at_once(lanthorn_client: Any, peer: StoreSCP) -> None:
    stored = lanthorn_client.post("/instances", content=make_instance()).json()
    job = execute(lanthorn_client, f"print(SendToModality('{stored['ID']}', 'sample'))").strip()
    wait_for(lambda: lanthorn_client.get(f"/jobs/{job}").json()["State"] == "Success")
    assert execute(lanthorn_client, f"print(Delete('{job}'))") == "true\n"
    assert lanthorn_client.get("/instances").json() == []


@pytest.mark.lanthorn_config(ExecuteLuaEnabled=True)
def test_http_functions_against_a_real_server(lanthorn_client: Any,
                                              second: ServerProcess) -> None:
    printed = execute(lanthorn_client, f"""
        local url = '{second.url}'
        print(HttpGet(url .. '/system'))  -- no credentials yet: 401, so nil
        SetHttpCredentials('robot', 'secret')
        SetHttpTimeout(5)
        print(ParseJson(HttpGet(url .. '/system'))['Name'])
        local modality = DumpJson({{AET = 'LUA', Host = '127.0.0.1', Port = 104}})
        print(HttpPut(url .. '/modalities/lua', modality) ~= nil)
        print(ParseJson(HttpGet(url .. '/modalities/lua/configuration'))['AET'])
        print(#ParseJson(HttpPost(url .. '/tools/lookup', 'no-such-uid')))
        print(HttpDelete(url .. '/modalities/lua'))
        print(HttpGet(url .. '/modalities/lua/configuration'))
        print(HttpGet('http://127.0.0.1:{free_port()}/'))  -- nobody listens
    """)
    assert printed.splitlines() == ["nil", "SECOND", "true", "LUA", "0", "true", "nil",
                                    "nil"]


@pytest.mark.lanthorn_config(ExecuteLuaEnabled=True)
def test_modify_instance(lanthorn_client: Any) -> None:
    original = lanthorn_client.post("/instances", content=make_instance(
        PatientName="OLD^NAME", StudyDescription="GONE")).json()["ID"]
    modified = execute(lanthorn_client, f"""
        print(ModifyInstance('{original}', {{PatientName = 'NEW^NAME'}},
                             {{'StudyDescription'}}, true))""").strip()
    assert modified != original
    tags = lanthorn_client.get(f"/instances/{modified}/simplified-tags").json()
    assert tags["PatientName"] == "NEW^NAME" and "StudyDescription" not in tags
    kept = lanthorn_client.get(f"/instances/{original}/simplified-tags").json()
    assert kept["PatientName"] == "OLD^NAME"
    assert execute(lanthorn_client, "print(ModifyInstance('nope', {}))") == "nil\n"


@scripts("callbacks.lua")
def test_updated_and_job_callbacks(lanthorn_client: Any, peer: StoreSCP) -> None:
    stored = lanthorn_client.post("/instances", content=make_instance()).json()
    for level, public_id in (("studies", stored["ParentStudy"]), ("instances", stored["ID"])):
        assert lanthorn_client.put(f"/{level}/{public_id}/metadata/Note",
                                   content="seen").status_code == 200
    store = {"Resources": [stored["ID"]], "Asynchronous": True}
    sent = lanthorn_client.post("/modalities/sample/store", json=store).json()["ID"]
    wait_for(lambda: lanthorn_client.get(f"/jobs/{sent}").json()["State"] == "Success")
    peer.status = 0xA700
    failed = lanthorn_client.post("/modalities/sample/store", json=store).json()["ID"]
    expected = [f"OnUpdatedStudy {stored['ParentStudy']}", f"OnUpdatedInstance {stored['ID']}",
                f"OnJobSubmitted {sent}", f"OnJobSuccess {sent}", f"OnJobSubmitted {failed}",
                f"OnJobFailure {failed}"]
    calls = "print(table.concat(calls, '\\n'))"
    wait_for(lambda: len(execute(lanthorn_client, calls).splitlines()) == len(expected))
    assert sorted(execute(lanthorn_client, calls).splitlines()) == sorted(expected)


@scripts("stable.lua")
@pytest.mark.lanthorn_config(StableAge=3600)
@pytest.mark.all_index_backends
def test_set_stable_status(lanthorn_client: Any) -> None:
    stable = "print(table.concat(stable, ','))"
    lanthorn_client.post("/instances", content=make_instance(StudyInstanceUID="1.2.9"))
    last = lanthorn_client.post("/instances", content=make_instance(
        StudyInstanceUID="1.2.9", ImageComments="LAST")).json()
    wait_for(lambda: execute(lanthorn_client, stable) == "1.2.9\n")
    study = lanthorn_client.get(f"/studies/{last['ParentStudy']}").json()
    assert study["IsStable"] is True
    printed = execute(lanthorn_client, f"""
        print(SetStableStatus('{study['ID']}', true))   -- already stable
        print(SetStableStatus('{study['ID']}', false))
        print(SetStableStatus('{last['ID']}', true))    -- an instance: no such status""")
    assert printed.splitlines() == ["false", "true", "nil"]
    assert lanthorn_client.get(f"/studies/{study['ID']}").json()["IsStable"] is False
