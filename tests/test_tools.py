"""Small core routes: UIDs, clocks, DICOM settings, log levels, modules, frames, slices,
exports. Expected module contents were recorded from Orthanc 1.10.1 with CT_small.dcm."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import UID, generate_uid
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from lanthorn.dimse.scp import make_application_entity
from lanthorn.rest.tools import LOG_CATEGORIES
from lanthorn.testing import make_instance

pytestmark = pytest.mark.all_index_backends

MakeInstance = Callable[..., bytes]
CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
#: What Orthanc 1.10.1 answers for CT_small.dcm (``?simplify``).
CT_MODULES = {
    "patients": {"PatientName": "CompressedSamples^CT1", "PatientID": "1CT1",
                 "PatientBirthDate": "", "PatientSex": "O", "OtherPatientIDsSequence": [
                     {"PatientID": "ABCD1234", "TypeOfPatientID": "TEXT"},
                     {"PatientID": "1234ABCD", "TypeOfPatientID": "TEXT"}]},
    "studies": {"StudyDate": "20040119", "StudyTime": "072730", "AccessionNumber": "",
                "ReferringPhysicianName": "", "StudyDescription": "e+1", "StudyID": "1CT1",
                "StudyInstanceUID": "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"},
    "series": {"SeriesDate": "19970430", "SeriesTime": "112749", "Modality": "CT",
               "PatientPosition": "FFS", "SeriesNumber": "1", "Laterality": "",
               "SeriesInstanceUID": "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"},
    "instances": {"SpecificCharacterSet": "ISO_IR 100", "InstanceCreationDate": "20040119",
                  "InstanceCreationTime": "072731", "InstanceCreatorUID": "1.3.6.1.4.1.5962.3",
                  "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2", "TimezoneOffsetFromUTC": "-0500",
                  "SOPInstanceUID": "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322",
                  "InstanceNumber": "1"},
}
KEYS = {"patients": "ParentPatient", "studies": "ParentStudy", "series": "ParentSeries",
        "instances": "ID"}
AXIAL = ["1", "0", "0", "0", "1", "0"]
PYTHON_LEVELS = {"default": logging.WARNING, "verbose": logging.INFO, "trace": logging.DEBUG}


def test_generate_uid(lanthorn_client: Any) -> None:
    patient = lanthorn_client.get("/tools/generate-uid?level=patient")
    assert patient.headers["content-type"].startswith("text/plain")
    assert str(uuid.UUID(patient.text)) == patient.text
    uids = {lanthorn_client.get(f"/tools/generate-uid?level={level}").text
            for level in ("study", "series", "instance", "Series", "instances")}
    assert len(uids) == 5 and all(UID(u).is_valid for u in uids)
    for bad in ("", "?level=", "?level=frame"):
        assert lanthorn_client.get(f"/tools/generate-uid{bad}").status_code == 400


def test_now(lanthorn_client: Any) -> None:
    for path, clock in (("/tools/now", datetime.now(UTC)), ("/tools/now-local", datetime.now())):
        answer = lanthorn_client.get(path).text
        when = datetime.strptime(answer, "%Y%m%dT%H%M%S").replace(tzinfo=clock.tzinfo)
        assert abs(when - clock) < timedelta(seconds=5), path


@pytest.mark.lanthorn_config(DefaultEncoding="Utf8", UnknownSopClassAccepted=True)
def test_configured_dicom_settings(lanthorn_client: Any) -> None:
    assert lanthorn_client.get("/tools/default-encoding").text == "Utf8"
    assert lanthorn_client.get("/tools/unknown-sop-class-accepted").text == "1"


def test_default_dicom_settings(lanthorn_client: Any) -> None:
    assert lanthorn_client.get("/tools/default-encoding").text == "Latin1"
    assert lanthorn_client.get("/tools/unknown-sop-class-accepted").text == "0"


def test_accepted_syntaxes_and_sop_classes_are_the_listeners(lanthorn_client: Any,
                                                             lanthorn_server: Any) -> None:
    storage = [c for c in make_application_entity(lanthorn_server).supported_contexts
               if uid_to_service_class(c.abstract_syntax) is StorageServiceClass]
    syntaxes = lanthorn_client.get("/tools/accepted-transfer-syntaxes").json()
    assert set(syntaxes) == {s for c in storage for s in c.transfer_syntax}
    assert syntaxes[:2] == ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"]  # in UID order
    sop_classes = lanthorn_client.get("/tools/accepted-sop-classes").json()
    assert "1.2.840.10008.5.1.4.1.1.2" in sop_classes  # CT Image Storage
    assert set(sop_classes) == {c.abstract_syntax for c in storage}
    statement = lanthorn_client.get("/tools/dicom-conformance")
    assert statement.headers["content-type"].startswith("text/plain")
    storage_part = statement.text.split("Storage SCP: SOP classes")[1]
    assert re.search(r"CT Image Storage +\| 1\.2\.840\.10008\.5\.1\.4\.1\.1\.2\n", storage_part)
    assert re.search(r"Verification SOP Class +\| 1\.2\.840\.10008\.1\.1\n", statement.text)
    assert all(f"| {s}\n" in storage_part for s in syntaxes)


def test_tools_lists_the_tools(lanthorn_client: Any) -> None:
    tools = lanthorn_client.get("/tools").json()
    assert tools == sorted(tools)
    assert {"create-archive", "find", "generate-uid", "labels", "log-level",
            "log-level-dicom"} <= set(tools)
    assert all(lanthorn_client.get(f"/tools/{name}").status_code != 404 for name in tools
               if name in ("now", "labels", "log-level-http"))


@pytest.fixture
def restore_log_levels() -> Iterator[None]:
    loggers = [logging.getLogger(name) for names in LOG_CATEGORIES.values() for name in names]
    levels = [logger.level for logger in loggers]
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


@pytest.mark.usefixtures("restore_log_levels")
def test_log_levels(lanthorn_client: Any) -> None:
    def level(category: str = "") -> str:
        return lanthorn_client.get(f"/tools/log-level{category}").text

    def put(verbosity: str, category: str = "") -> None:
        response = lanthorn_client.put(f"/tools/log-level{category}", content=verbosity)
        assert (response.status_code, response.text) == (200, "")

    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("lanthorn").setLevel(logging.INFO)  # as `lanthorn serve` starts
    assert (level(), level("-generic")) == ("default", "verbose")
    for verbosity, root, own in (("trace", logging.DEBUG, logging.DEBUG),
                                 ("verbose", logging.INFO, logging.INFO),
                                 ("default", logging.WARNING, logging.INFO)):
        put(verbosity)
        assert level() == verbosity
        assert (logging.getLogger().level, logging.getLogger("lanthorn").level) == (root, own)
    for category, names in LOG_CATEGORIES.items():
        for verbosity in ("trace", "default", "verbose"):
            put(verbosity, f"-{category}" if category else "")
            assert level(f"-{category}" if category else "") == verbosity
            assert {logging.getLogger(n).level for n in names} == {PYTHON_LEVELS[verbosity]}
    assert lanthorn_client.put("/tools/log-level", content="loud").status_code == 400
    assert lanthorn_client.get("/tools/log-level-nosuchcategory").status_code == 404


@pytest.mark.parametrize("level", CT_MODULES)
def test_module_of_each_level_as_orthanc(level: str, lanthorn_client: Any) -> None:
    stored = lanthorn_client.post("/instances", content=CT_SMALL.read_bytes()).json()
    url = f"/{level}/{stored[KEYS[level]]}/module"
    simplified = lanthorn_client.get(f"{url}?simplify").json()
    assert simplified == CT_MODULES[level]
    full = lanthorn_client.get(url).json()
    short = lanthorn_client.get(f"{url}?short").json()
    assert list(full) == list(short) and all(re.fullmatch("[0-9a-f]{4},[0-9a-f]{4}", k)
                                             for k in full)
    assert [v["Name"] for v in full.values()] == list(simplified)
    assert all(v["Value"] == short[k] or v["Type"] == "Sequence" for k, v in full.items())


def test_module_patient_of_a_study(lanthorn_client: Any) -> None:
    study = lanthorn_client.post("/instances", content=CT_SMALL.read_bytes()).json()["ParentStudy"]
    assert lanthorn_client.get(f"/studies/{study}/module-patient?simplify").json() == \
        CT_MODULES["patients"]
    assert lanthorn_client.get("/studies/nosuchstudy/module-patient").status_code == 404


def test_frames(lanthorn_client: Any, ct_instance: MakeInstance) -> None:
    single = lanthorn_client.post("/instances", content=ct_instance()).json()["ID"]
    multi = lanthorn_client.post("/instances", content=ct_instance(NumberOfFrames=3)).json()["ID"]
    assert lanthorn_client.get(f"/instances/{single}/frames").json() == [0]
    assert lanthorn_client.get(f"/instances/{multi}/frames").json() == [0, 1, 2]


def _series(client: Any, make: MakeInstance, *tags: dict[str, Any]) -> tuple[str, list[str]]:
    common = {"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid()}
    answers = [client.post("/instances", content=make(**common, **t)).json() for t in tags]
    return answers[0]["ParentSeries"], [a["ID"] for a in answers]


def _short(client: Any, series: str) -> tuple[str, list[list[Any]]]:
    answer = client.get(f"/series/{series}/ordered-slices").json()
    order = [s[0] for s in answer["SlicesShort"]]
    assert answer["Dicom"] == [f"/instances/{i}/file" for i in order]
    assert answer["Slices"] == [f"/instances/{i}/frames/{f}"
                                for i, _, count in answer["SlicesShort"] for f in range(count)]
    return answer["Type"], answer["SlicesShort"]


def test_ordered_slices_as_orthanc(lanthorn_client: Any) -> None:
    """The orders Orthanc 1.10.1 gave the same series."""
    def at(z: str, number: int, **more: Any) -> dict[str, Any]:
        return {"ImagePositionPatient": ["0", "0", z], "ImageOrientationPatient": AXIAL,
                "InstanceNumber": number, **more}

    client, make = lanthorn_client, make_instance
    series, (a, b, c) = _series(client, make, at("5", 1), at("-3", 2), at("10", 3))
    assert _short(client, series) == ("Volume", [[b, 0, 1], [a, 0, 1], [c, 0, 1]])
    series, (a, b, c) = _series(client, make, *({"InstanceNumber": n} for n in (3, 1, 2)))
    assert _short(client, series) == ("Sequence", [[b, 0, 1], [c, 0, 1], [a, 0, 1]])
    series, (a, b, c) = _series(client, make, *({"InstanceNumber": n} for n in (3, 1, 1)))
    assert _short(client, series) == ("Sequence", [[b, 0, 1], [c, 0, 1], [a, 0, 1]])
    series, (a, b) = _series(client, make, at("5", 1), at("5", 2))  # one place: no volume
    assert _short(client, series) == ("Sequence", [[a, 0, 1], [b, 0, 1]])
    series, (a, b) = _series(client, make, *({"ImagePositionPatient": ["0", "0", z],
                                              "InstanceNumber": n} for z, n in (("5", 2),
                                                                                ("-3", 1))))
    assert _short(client, series) == ("Sequence", [[b, 0, 1], [a, 0, 1]])  # no orientation
    series, (a, b) = _series(client, make, at("1", 2, NumberOfFrames=3), at("2", 1))
    assert _short(client, series) == ("Volume", [[a, 0, 3], [b, 0, 1]])
    series, (a, b) = _series(client, make, {"InstanceNumber": 2, "NumberOfFrames": 3},
                             {"InstanceNumber": 1})
    assert _short(client, series) == ("Sequence", [[b, 0, 1], [a, 0, 3]])
    series, (a,) = _series(client, make, at("3", 1))
    assert _short(client, series) == ("Sequence", [[a, 0, 1]])
    assert client.get(f"/studies/{series}/ordered-slices").status_code == 404


def test_exports_shape(lanthorn_client: Any) -> None:
    assert lanthorn_client.get("/exports").json() == {"Exports": [], "Done": True, "Last": 0}


def test_default_encoding_can_be_changed(lanthorn_client: Any) -> None:
    changed = lanthorn_client.put("/tools/default-encoding", content="Utf8")
    assert (changed.status_code, changed.text) == (200, "Utf8")
    assert lanthorn_client.get("/tools/default-encoding").text == "Utf8"
    refused = lanthorn_client.put("/tools/default-encoding", content="Klingon")
    assert refused.status_code == 400 and "Latin1" in refused.json()["Details"]
    assert lanthorn_client.get("/tools/default-encoding").text == "Utf8"


@pytest.mark.parametrize("path", ["/instances/{instance}/reconstruct",
                                  "/series/{series}/reconstruct",
                                  "/studies/{study}/reconstruct",
                                  "/patients/{patient}/reconstruct", "/tools/reconstruct"])
def test_reconstruct_takes_the_parents_tags_from_the_files_again(
        path: str, lanthorn_client: Any) -> None:
    study = {"StudyInstanceUID": generate_uid(), "PatientID": "P"}
    first = lanthorn_client.post("/instances", content=make_instance(
        **study, StudyDescription="FIRST", PatientName="A")).json()
    second = lanthorn_client.post("/instances", content=make_instance(
        **study, StudyDescription="SECOND", PatientName="B")).json()
    study_url = f"/studies/{first['ParentStudy']}"
    assert lanthorn_client.get(study_url).json()["MainDicomTags"]["StudyDescription"] == "FIRST"
    url = path.format(instance=second["ID"], series=second["ParentSeries"],
                      study=first["ParentStudy"], patient=first["ParentPatient"])
    done = lanthorn_client.post(url)
    assert (done.status_code, done.text) == (200, "")
    # The instance read last (the second: in order of arrival) gives its parents' values.
    assert lanthorn_client.get(study_url).json()["MainDicomTags"]["StudyDescription"] == "SECOND"
    assert lanthorn_client.get(f"/patients/{first['ParentPatient']}").json()[
        "MainDicomTags"]["PatientName"] == "B"
    assert lanthorn_client.get(f"/instances/{second['ID']}/metadata/TransferSyntax").text == \
        "1.2.840.10008.1.2.1"


def test_reconstruct_files_applies_storage_compression(
        lanthorn_server: Any, lanthorn_client: Any) -> None:
    data = make_instance()
    instance = lanthorn_client.post("/instances", content=data).json()["ID"]
    compressed = f"/instances/{instance}/attachments/dicom/is-compressed"
    assert lanthorn_client.get(compressed).text == "0"
    lanthorn_server.config = lanthorn_server.config.with_overrides(StorageCompression=True)
    assert lanthorn_client.post(f"/instances/{instance}/reconstruct").status_code == 200
    assert lanthorn_client.get(compressed).text == "0"  # the files only when asked
    done = lanthorn_client.post(f"/instances/{instance}/reconstruct",
                                json={"ReconstructFiles": True})
    assert done.status_code == 200 and lanthorn_client.get(compressed).text == "1"
    assert lanthorn_client.get(f"/instances/{instance}/file").content == data
    assert lanthorn_client.post("/tools/reconstruct", json={"ReconstructFiles": 1}) \
        .status_code == 400
    assert lanthorn_client.post("/studies/nope/reconstruct").status_code == 404
