"""The Lua filters that need the core's hooks: HTTP requests, and C-FIND requests
received (query/retrieve and worklist) and sent, each with its script-error path. The
C-FINDs travel over real associations, to and from the server's own listener."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lua_support import SCU_AET, listening, scu
from pydicom.dataset import Dataset
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
)

import lanthorn
import lanthorn_lua
from lanthorn import Server
from lanthorn.testing import make_instance

SCRIPTS = Path(__file__).parent / "scripts"
PATIENT_FIND = PatientRootQueryRetrieveInformationModelFind
WORKLIST = ModalityWorklistInformationFind

pytestmark = pytest.mark.lanthorn_plugins(lanthorn_lua)


def scripts(name: str) -> pytest.MarkDecorator:
    return pytest.mark.lanthorn_config(LuaScripts=[str(SCRIPTS / name)], ExecuteLuaEnabled=True)


@scripts("http_filter.lua")
@pytest.mark.lanthorn_config(AuthenticationEnabled=True,
                             RegisteredUsers={"admin": "pw", "bob": "pw"})
def test_incoming_http_request_filter(lanthorn_client: Any) -> None:
    instance = make_instance()
    assert lanthorn_client.get("/system", auth=("bob", "pw")).status_code == 200
    refused = lanthorn_client.post("/instances", content=instance, auth=("bob", "pw"))
    assert refused.status_code == 403
    assert refused.json()["Details"] == "the Lua IncomingHttpRequestFilter refused this request"
    assert lanthorn_client.post("/instances", content=instance,
                                auth=("admin", "pw")).status_code == 200
    seen = lanthorn_client.post("/tools/execute-script", content="print(seen)",
                                auth=("admin", "pw"))
    assert seen.text == "POST /tools/execute-script 127.0.0.1 admin\n"
    broken = lanthorn_client.get("/system", auth=("bob", "pw"), headers={"x-break": "1"})
    assert broken.status_code == 403
    assert "http_filter.lua:4: cannot judge /system" in broken.json()["Details"]
    assert broken.json()["Details"].startswith("the Lua filter failed, request refused")


class Worklist:
    """Answers one worklist item echoing the (filtered) patient name asked for."""

    @lanthorn.hookimpl
    def handle_worklist_find(self, request: lanthorn.DimseRequest) -> list[Dataset]:
        item = Dataset()
        item.PatientName = request.identifier.PatientName
        item.PatientID = request.identifier.PatientID
        return [item]


def c_find(server: Server, model: str, aet: str = SCU_AET, **keys: str) -> list[Any]:
    identifier = Dataset()
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    with scu(server.config["DicomPort"], model, aet=aet) as association:
        return list(association.send_c_find(identifier, model))


@scripts("find_filters.lua")
@pytest.mark.lanthorn_plugins(Worklist())
@pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1", DicomAlwaysAllowFind=True,
                             DicomAlwaysAllowFindWorklist=True)
def test_incoming_find_and_worklist_filters(lanthorn_server: Server,
                                            caplog: pytest.LogCaptureFixture) -> None:
    for patient in ("P1", "P2"):
        lanthorn_server.ingest.store(make_instance(PatientID=patient), lanthorn.Origin())
    with listening(lanthorn_server):
        found = c_find(lanthorn_server, PATIENT_FIND, QueryRetrieveLevel="PATIENT",
                       PatientID="typo")
        assert [a.PatientID for _, a in found if a] == ["P1"]
        [(status, _)] = c_find(lanthorn_server, PATIENT_FIND, aet="BANNED",
                               QueryRetrieveLevel="PATIENT", PatientID="")
        assert status.Status == 0xC000
        assert status.ErrorComment.startswith("the Lua filter failed, query refused")
        assert "find_filters.lua:4: no queries from BANNED" in caplog.text

        items = c_find(lanthorn_server, WORKLIST, PatientName="", PatientID="")
        assert [str(a.PatientName) for _, a in items if a] == [f"WORK^{SCU_AET}"]
        [(status, _)] = c_find(lanthorn_server, WORKLIST, PatientName="", PatientID="ERR")
        assert (status.Status, status.ErrorComment) == (
            0xC000, "the Lua IncomingWorklistRequestFilter returned no table")


@scripts("find_filters.lua")
@pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1")
def test_outgoing_find_request_filter(lanthorn_server: Server, lanthorn_client: Any) -> None:
    for patient in ("P1", "P2"):
        lanthorn_server.ingest.store(make_instance(PatientID=patient), lanthorn.Origin())
    lanthorn_client.put("/modalities/self", json={  # our own listener is the modality
        "AET": lanthorn_server.config["DicomAet"], "Host": "127.0.0.1",
        "Port": lanthorn_server.config["DicomPort"]})
    with listening(lanthorn_server):
        asked = lanthorn_client.post("/modalities/self/query", json={
            "Level": "Patient", "Query": {"PatientID": "*"}}).json()
        answers = lanthorn_client.get(f"{asked['Path']}/answers?expand&simplify").json()
        assert [a["PatientID"] for a in answers] == ["P2"]
        refused = lanthorn_client.post("/modalities/self/find-patient", json={"PatientID": "ERR"})
    assert refused.status_code == 403
    assert "find_filters.lua:23: cannot ask LANTHORN" in refused.json()["Details"]
