"""The core REST API against the answers of a real Orthanc (tests/fixtures), plus errors,
deletion, paging, the change log, plugins, remote access and a real HTTP server."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from pydicom.data import get_testdata_file
from pydicom.datadict import tag_for_keyword
from pydicom.uid import generate_uid
from starlette.testclient import TestClient

pytestmark = pytest.mark.all_index_backends

SHAPES = json.loads((Path(__file__).parent / "fixtures" / "orthanc_shapes.json").read_text())
ORTHANC_IDS = json.loads((Path(__file__).parent / "fixtures" / "orthanc_ids.json").read_text())
CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
CT_IDS = ORTHANC_IDS["files"]["CT_small.dcm"]["answer"]
PLACEHOLDERS = {"{patient}": CT_IDS["ParentPatient"], "{study}": CT_IDS["ParentStudy"],
                "{series}": CT_IDS["ParentSeries"], "{instance}": CT_IDS["ID"]}
MakeInstance = Callable[..., bytes]

#: Keys we add to Orthanc's objects.
OUR_KEYS = {"Labels", "Lanthorn"}
#: Values that depend on the time or on file UUIDs: compared by type only.
VOLATILE = {"LastUpdate", "FileUuid", "ReceptionDate", "IsStable"}
#: Orthanc answered these after storing all of pydicom's files, we after CT_small only;
#: or they hold ports, times and sequence numbers: compare their shapes, not values.
SHAPE_ONLY = {"/system", "/statistics", "/patients", "/changes", "/changes?limit=2",
              "/changes?last", "/instances/{instance}/metadata/ReceptionDate"}
#: Recorded GETs that are not compared here, and why.
NOT_COMPARED = {
    "/plugins": "we list our own plugins: test_plugins below",
    "/changes?limit=1000 (after stable)": "Stable* changes come only after StableAge",
    "/instances/{instance}/tags (examples_palette.dcm)": "covered by tests/test_roundtrip.py",
    "/instances/{instance}/tags?short (examples_palette.dcm)": "idem",
}
GETS = sorted(key.removeprefix("GET ") for key, recorded in SHAPES.items()
              if key.startswith("GET ") and recorded["status"] == 200
              and key.removeprefix("GET ") not in NOT_COMPARED)


def _compare(ours: Any, theirs: Any, where: str, values: bool) -> list[str]:
    """Differences in keys and types, and in values too when ``values`` is set."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        missing, unexpected = set(theirs) - set(ours), set(ours) - set(theirs) - OUR_KEYS
        problems = [f"{where}: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
                    ] if missing or unexpected else []
        for key in set(theirs) & set(ours):
            problems += _compare(ours[key], theirs[key], f"{where}.{key}",
                                 values and key not in VOLATILE)
        return problems
    if isinstance(ours, list) and isinstance(theirs, list):
        if values and len(ours) != len(theirs):
            return [f"{where}: {len(ours)} items instead of {len(theirs)}"]
        pairs = zip(ours, theirs, strict=True) if values else \
            ((o, theirs[0]) for o in ours if theirs)
        return [problem for i, (o, t) in enumerate(pairs)
                for problem in _compare(o, t, f"{where}[{i}]", values)]
    same_type = type(ours) is type(theirs) or (not values and None in (ours, theirs))
    return [] if same_type and (ours == theirs or not values) else \
        [f"{where}: {ours!r} instead of {theirs!r}"]


def _without_private_names(tags: dict[str, Any]) -> dict[str, Any]:
    """Private tags are named from a dictionary, and DCMTK's (Orthanc) differs from
    pydicom's (us): compare their values, not their names."""
    if all(isinstance(v, dict) for v in tags.values()):  # the full form, keyed by tag
        return {k: {n: x for n, x in v.items() if n != "Name" or "PrivateCreator" not in v}
                for k, v in tags.items()}
    return {k: v for k, v in tags.items() if tag_for_keyword(k) or "," in k}


@pytest.mark.parametrize("path", GETS)
def test_answer_is_shaped_like_orthancs(path: str, lanthorn_client: Any) -> None:
    recorded = SHAPES[f"GET {path}"]
    lanthorn_client.post("/instances", content=CT_SMALL.read_bytes())
    url = path
    for placeholder, public_id in PLACEHOLDERS.items():
        url = url.replace(placeholder, public_id)
    response = lanthorn_client.get(url)
    assert response.status_code == recorded["status"]
    media_type = response.headers["content-type"].split(";")[0]
    assert media_type == recorded["headers"]["content-type"].split(";")[0]
    theirs = recorded["body"]
    if media_type != "application/json":
        ours: Any = response.text
        theirs = str(theirs)
    else:
        ours = response.json()
    if path == "/patients?expand":  # Orthanc had every pydicom file: keep CT_small's patient
        theirs = [p for p in theirs if p["ID"] == CT_IDS["ParentPatient"]]
    if path == "/instances/{instance}/metadata":  # Orthanc lists them by its internal numbers
        ours, theirs = sorted(ours), sorted(theirs)
    if "tags" in path:
        ours, theirs = _without_private_names(ours), _without_private_names(theirs)
    assert _compare(ours, theirs, path, path not in SHAPE_ONLY) == []


def test_content_browses_sequences(lanthorn_client: Any) -> None:
    instance = lanthorn_client.post("/instances", content=CT_SMALL.read_bytes()).json()["ID"]

    def get(path: str) -> Any:
        return lanthorn_client.get(f"/instances/{instance}/content/{path}")

    assert get("0010-1002").json() == ["0", "1"]  # OtherPatientIDsSequence
    assert get("0010-1002/1").json() == ["0010-0020", "0010-0022"]
    assert get("0010-1002/1/0010-0020").content == b"1234ABCD"
    assert get("0028-0010").content == b"128"  # Rows, a binary number, as text
    for missing in ("0010-1002/2", "0010-1002/-1", "0010-0010/0", "0010-0011", "nonsense"):
        assert get(missing).status_code == 404, missing


def test_system(lanthorn_client: Any) -> None:
    system = lanthorn_client.get("/system").json()
    assert system["Version"] == "1.12.11"
    assert isinstance(system["ApiVersion"], int) and system["ApiVersion"] > 16
    assert system["Lanthorn"]


@pytest.mark.parametrize("method, url, recorded", [
    ("GET", "/instances/nonexistent/file", "GET /instances/nonexistent/file"),
    ("GET", "/patients/nonexistent", "GET /instances/nonexistent/file"),
    ("DELETE", "/patients/nonexistent", "GET /instances/nonexistent/file"),
    ("GET", "/nosuchroute", "GET /nosuchroute"),
])
def test_not_found(method: str, url: str, recorded: str, lanthorn_client: Any) -> None:
    response = lanthorn_client.request(method, url)
    assert response.status_code == 404
    expected = {**SHAPES[recorded]["body"], "Method": method, "Uri": url}
    assert {k: v for k, v in response.json().items() if k != "Details"} == expected


def test_delete_keeps_surviving_parents(lanthorn_client: Any, lanthorn_config: Any,
                                        ct_instance: MakeInstance) -> None:
    study = {"StudyInstanceUID": generate_uid()}
    first = lanthorn_client.post("/instances", content=ct_instance(**study)).json()
    second = lanthorn_client.post("/instances", content=ct_instance(**study)).json()
    storage = Path(lanthorn_config["StorageDirectory"])
    assert len(list(storage.glob("??/??/*"))) == 2

    answer = lanthorn_client.delete(f"/instances/{first['ID']}").json()
    assert answer == {"RemainingAncestor": {
        "ID": first["ParentStudy"], "Path": f"/studies/{first['ParentStudy']}",
        "Type": "Study"}}
    assert lanthorn_client.get(f"/series/{first['ParentSeries']}").status_code == 404
    assert len(list(storage.glob("??/??/*"))) == 1

    answer = lanthorn_client.delete(f"/series/{second['ParentSeries']}").json()
    assert answer == {"RemainingAncestor": None}
    assert lanthorn_client.get("/patients").json() == []
    assert list(storage.glob("??/??/*")) == []
    deleted = [(c["ChangeType"], c["ResourceType"])
               for c in lanthorn_client.get("/changes").json()["Changes"][-5:]]
    assert deleted == [("Deleted", "Instance"), ("Deleted", "Series"), ("Deleted", "Series"),
                       ("Deleted", "Study"), ("Deleted", "Patient")]


def test_delete_patient(lanthorn_client: Any, lanthorn_config: Any) -> None:
    ids = lanthorn_client.post("/instances", content=CT_SMALL.read_bytes()).json()
    answer = lanthorn_client.delete(f"/patients/{ids['ParentPatient']}")
    assert answer.json() == SHAPES["DELETE /studies/{study}"]["body"]
    assert lanthorn_client.get("/statistics").json()["CountInstances"] == 0
    assert list(Path(lanthorn_config["StorageDirectory"]).glob("??/??/*")) == []


def test_since_and_limit_on_patients(lanthorn_client: Any, ct_instance: MakeInstance) -> None:
    patients = [lanthorn_client.post("/instances", content=ct_instance(PatientID=f"P{i}"))
                .json()["ParentPatient"] for i in range(5)]
    assert lanthorn_client.get("/patients").json() == patients
    assert lanthorn_client.get("/patients?since=1&limit=2").json() == patients[1:3]
    assert lanthorn_client.get("/patients?since=4&limit=10").json() == patients[4:]
    assert lanthorn_client.get("/patients?since=5").json() == []
    expanded = lanthorn_client.get("/patients?expand&since=3").json()
    assert [p["ID"] for p in expanded] == patients[3:]
    assert lanthorn_client.get("/patients?limit=-1").status_code == 400


def test_changes_paging(lanthorn_client: Any, ct_instance: MakeInstance) -> None:
    empty = lanthorn_client.get("/changes").json()
    assert empty == {"Changes": [], "Done": True, "Last": 0}
    study = {"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid()}
    for _ in range(3):  # 4 changes, then 1 and 1
        lanthorn_client.post("/instances", content=ct_instance(**study))
    everything = lanthorn_client.get("/changes").json()
    seqs = [c["Seq"] for c in everything["Changes"]]
    assert len(seqs) == 6 and seqs == sorted(seqs)
    assert everything["Done"] is True and everything["Last"] == seqs[-1]

    page = lanthorn_client.get("/changes?limit=2").json()
    assert [c["Seq"] for c in page["Changes"]] == seqs[:2]
    assert page["Done"] is False and page["Last"] == seqs[1]
    page = lanthorn_client.get(f"/changes?since={page['Last']}&limit=3").json()
    assert [c["Seq"] for c in page["Changes"]] == seqs[2:5]
    assert page["Done"] is False and page["Last"] == seqs[4]
    page = lanthorn_client.get(f"/changes?since={page['Last']}&limit=3").json()
    assert [c["Seq"] for c in page["Changes"]] == seqs[5:]
    assert page["Done"] is True and page["Last"] == seqs[5]
    page = lanthorn_client.get(f"/changes?since={seqs[-1]}").json()
    assert page == {"Changes": [], "Done": True, "Last": seqs[-1]}

    last = lanthorn_client.get("/changes?last").json()
    assert last == {"Changes": everything["Changes"][-1:], "Done": True, "Last": seqs[-1]}


def test_plugins(lanthorn_client: Any) -> None:
    names = lanthorn_client.get("/plugins").json()
    assert {"filesystem", "sqlite", "errors", "routes"} <= set(names)
    described = lanthorn_client.get("/plugins/sqlite").json()
    assert described["ID"] == "sqlite"
    assert described["Status"] == "loaded"
    assert lanthorn_client.get("/plugins/nosuchplugin").status_code == 404


@pytest.mark.parametrize("allowed", [
    pytest.param(allowed, marks=pytest.mark.lanthorn_config(RemoteAccessAllowed=allowed,
                                                             AuthenticationEnabled=False))
    for allowed in (False, True)])
def test_remote_access(allowed: bool, lanthorn_server: Any) -> None:
    with TestClient(lanthorn_server.app, client=("10.1.2.3", 1234)) as remote:
        response = remote.get("/system")
    assert response.status_code == (200 if allowed else 403)
    if not allowed:
        answer = response.json()
        assert (answer["HttpStatus"], answer["OrthancStatus"], answer["Uri"]) == \
            (403, 11, "/system")
        assert "RemoteAccessAllowed" in answer["Details"]
    with TestClient(lanthorn_server.app, client=("::1", 1234)) as local:
        assert local.get("/system").status_code == 200


def test_real_http_server(lanthorn_process: Any) -> None:
    """Real sockets: upload and download with an HTTP client, then a clean stop."""
    lanthorn_process.start()
    data = CT_SMALL.read_bytes()
    with httpx2.Client(base_url=lanthorn_process.url, timeout=30) as client:
        answer = client.post("/instances", content=data).json()
        assert answer["ID"] == CT_IDS["ID"]
        assert client.get(f"/instances/{answer['ID']}/file").content == data
    assert lanthorn_process.stop(signal.SIGTERM) == 0


# No Stable* change after ours, even when slow:
@pytest.mark.lanthorn_config(StableAge=3600, UserMetadata={"Reviewed": 1024})
def test_metadata_can_be_set_read_and_deleted(lanthorn_client: Any,
                                              ct_instance: MakeInstance) -> None:
    study = lanthorn_client.post("/instances", content=ct_instance()).json()["ParentStudy"]
    url = f"/studies/{study}/metadata/Reviewed"
    assert lanthorn_client.get(url).status_code == 404
    assert lanthorn_client.put(url, content=b"yes").status_code == 200
    assert lanthorn_client.get(url).text == "yes"
    assert lanthorn_client.get(f"/studies/{study}/metadata?expand").json() == {"Reviewed": "yes"}
    changes = lanthorn_client.get("/changes?limit=1000").json()["Changes"]
    assert changes[-1]["ChangeType"] == "UpdatedMetadata" and changes[-1]["ID"] == study
    assert lanthorn_client.delete(url).status_code == 200
    assert lanthorn_client.get(url).status_code == 404
    assert lanthorn_client.delete(url).status_code == 404


@pytest.mark.parametrize("compressed", [False, True])
def test_file_byte_ranges(compressed: bool, lanthorn_config: Any,
                          lanthorn_make_server: Any) -> None:
    server = lanthorn_make_server(lanthorn_config.with_overrides(StorageCompression=compressed))
    data = CT_SMALL.read_bytes()
    try:
        with TestClient(server.app, client=("127.0.0.1", 1)) as client:
            url = f"/instances/{client.post('/instances', content=data).json()['ID']}/file"
            whole = client.get(url)
            assert whole.content == data and whole.headers["accept-ranges"] == "bytes"
            part = client.get(url, headers={"Range": "bytes=128-131"})
            assert part.status_code == 206 and part.content == b"DICM"
            assert part.headers["content-range"] == f"bytes 128-131/{len(data)}"
            assert client.get(url, headers={"Range": "bytes=-10"}).content == data[-10:]
            assert client.get(url, headers={"Range": "bytes=39000-"}).content == data[39000:]
            assert client.get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416
            assert client.get(url, headers={"Range": "lines=1-2"}).status_code == 416
    finally:
        server.close()


def test_deleting_changes_empties_the_log_and_numbering_goes_on(
        lanthorn_client: Any, ct_instance: MakeInstance) -> None:
    lanthorn_client.post("/instances", content=ct_instance())
    before = lanthorn_client.get("/changes").json()["Last"]
    deleted = lanthorn_client.delete("/changes")
    assert (deleted.status_code, deleted.text) == (200, "")
    assert lanthorn_client.get("/changes").json() == {"Changes": [], "Done": True, "Last": 0}
    lanthorn_client.post("/instances", content=ct_instance())
    assert lanthorn_client.get("/changes").json()["Changes"][0]["Seq"] > before


def test_instances_tags_of_each_level(lanthorn_client: Any, ct_instance: MakeInstance) -> None:
    study = {"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid()}
    ids = [lanthorn_client.post("/instances", content=ct_instance(**study, InstanceNumber=n))
           .json() for n in (1, 2)]
    first = ids[0]
    for level, key in (("patients", "ParentPatient"), ("studies", "ParentStudy"),
                       ("series", "ParentSeries")):
        tags = lanthorn_client.get(f"/{level}/{first[key]}/instances-tags").json()
        assert tags == {i["ID"]: lanthorn_client.get(f"/instances/{i['ID']}/tags").json()
                        for i in ids}
    simplified = lanthorn_client.get(f"/series/{first['ParentSeries']}/instances-tags"
                                     "?simplify").json()
    assert sorted(t["InstanceNumber"] for t in simplified.values()) == ["1", "2"]
    assert simplified[first["ID"]]["PixelData"] is None  # as Orthanc: present, not shown
    short = lanthorn_client.get(f"/studies/{first['ParentStudy']}/instances-tags?short").json()
    assert short[first["ID"]]["0020,0013"] == "1"
    assert lanthorn_client.get(f"/instances/{first['ID']}/instances-tags").status_code == 404
    assert lanthorn_client.get(f"/studies/{first['ParentSeries']}/instances-tags") \
        .status_code == 404


def test_bulk_content(lanthorn_client: Any, ct_instance: MakeInstance) -> None:
    study = {"StudyInstanceUID": generate_uid()}
    stored = [lanthorn_client.post("/instances", content=ct_instance(**study)).json()
              for _ in range(2)]
    study_id = stored[0]["ParentStudy"]
    answer = lanthorn_client.post("/tools/bulk-content", json={
        "Resources": [study_id], "Level": "Series"}).json()
    assert sorted(s["ID"] for s in answer) == sorted(i["ParentSeries"] for i in stored)
    assert answer[0]["Metadata"] == lanthorn_client.get(
        f"/series/{answer[0]['ID']}/metadata?expand").json()
    assert {k: v for k, v in answer[0].items() if k != "Metadata"} == \
        lanthorn_client.get(f"/series/{answer[0]['ID']}").json()
    up = lanthorn_client.post("/tools/bulk-content", json={
        "Resources": [i["ID"] for i in stored], "Level": "Patient", "Short": True,
        "Metadata": False}).json()
    assert len(up) == 1 and "Metadata" not in up[0]
    assert up[0]["MainDicomTags"]["0010,0020"] == "1CT1"
    same = lanthorn_client.post("/tools/bulk-content", json={"Resources": [study_id],
                                                            "Full": True}).json()
    assert [s["ID"] for s in same] == [study_id]
    assert same[0]["MainDicomTags"]["0020,000d"]["Name"] == "StudyInstanceUID"
    for body, status in (({"Resources": "x"}, 400), ({"Resources": [study_id], "Level": "X"}, 400),
                         ({"Resources": ["nope"]}, 404)):
        assert lanthorn_client.post("/tools/bulk-content", json=body).status_code == status


def test_export_is_refused_unless_enabled(lanthorn_client: Any, ct_instance: MakeInstance,
                                          tmp_path: Path) -> None:
    instance = lanthorn_client.post("/instances", content=ct_instance()).json()["ID"]
    refused = lanthorn_client.post(f"/instances/{instance}/export",
                                   content=str(tmp_path / "x.dcm"))
    assert refused.status_code == 403 and "RestApiWriteToFileSystemEnabled" in \
        refused.json()["Details"]
    assert not (tmp_path / "x.dcm").exists()


@pytest.mark.lanthorn_config(RestApiWriteToFileSystemEnabled=True, StorageCompression=True)
def test_export_writes_the_file(lanthorn_client: Any, ct_instance: MakeInstance,
                                tmp_path: Path) -> None:
    data = ct_instance()
    instance = lanthorn_client.post("/instances", content=data).json()["ID"]
    written = lanthorn_client.post(f"/instances/{instance}/export",
                                   content=str(tmp_path / "x.dcm"))
    assert (written.status_code, written.json()) == (200, {})
    assert (tmp_path / "x.dcm").read_bytes() == data
    missing_folder = lanthorn_client.post(f"/instances/{instance}/export",
                                          content=str(tmp_path / "no" / "x.dcm"))
    assert missing_folder.status_code == 400
    assert lanthorn_client.post("/instances/nope/export", content="x").status_code == 404
