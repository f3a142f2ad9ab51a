"""Modification and anonymization through the REST API, with real DICOM files read back
with pydicom: every option, one new UID per original UID across a study, the Basic
Profile, Orthanc's rules for identifiers (messages as Orthanc 1.10.1 gave them), bulk
tools, and persistent pseudonyms across requests and a restart of the server."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import httpx2
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from lanthorn import modify
from lanthorn.deidentify import PROFILE, Action, action_of
from lanthorn.model import Level, public_id
from lanthorn.server import Server
from lanthorn.testing import ServerProcess, make_instance

pytestmark = pytest.mark.all_index_backends

STUDY = generate_uid()
SERIES = [generate_uid(), generate_uid()]
SOPS = [generate_uid() for _ in range(3)]
FRAME = generate_uid()
#: Values that identify the patient; none may survive anonymization, anywhere in the file.
PHI = {"PatientID": "PHI-ID-4711", "PatientName": "Secret^Person", "PatientBirthDate": "19610203",
       "AccessionNumber": "ACC-PHI-99", "InstitutionName": "Hospital Of Secrets",
       "ReferringPhysicianName": "Doctor^Who", "StudyDescription": "Secret study",
       "StationName": "SECRETSTATION", "OperatorsName": "Operator^Secret",
       "OtherPatientIDs": "OTHER-PHI-ID", "StudyID": "STUDYPHI", "PatientAge": "061Y",
       "SeriesDate": "20190304", "AcquisitionDate": "20190305", "ContentDate": "20190306"}


def _reference(sop: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = sop
    return item


def _private(dataset_bytes: bytes) -> bytes:
    """The same file with a private block (creator "SECRET CORP") holding PHI."""
    dataset = pydicom.dcmread(io.BytesIO(dataset_bytes))
    block = dataset.private_block(0x0009, "SECRET CORP", create=True)
    block.add_new(0x01, "LO", "PRIVATE-PHI")
    block.add_new(0x02, "US", 7)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _study_files() -> list[bytes]:
    """A study of two series and three instances; the third refers to the first and holds
    PHI in a nested sequence and in private tags."""
    files = []
    for number, (sop, series) in enumerate(zip(SOPS, [SERIES[0], SERIES[0], SERIES[1]],
                                               strict=True)):
        tags: dict[str, Any] = {**PHI, "StudyInstanceUID": STUDY, "SeriesInstanceUID": series,
                                "SOPInstanceUID": sop, "InstanceNumber": number + 1,
                                "FrameOfReferenceUID": FRAME}
        if number == 2:
            observer = Dataset()
            observer.VerifyingObserverName = "Observer^Secret"
            observer.CodeMeaning = "Secret meaning"  # not in the table, in a D sequence
            tags["ReferencedImageSequence"] = Sequence([_reference(SOPS[0])])
            tags["VerifyingObserverSequence"] = Sequence([observer])
        files.append(make_instance(**tags))
    files[2] = _private(files[2])
    return files


def _upload(client: Any, data: bytes) -> dict[str, Any]:
    response = client.post("/instances", content=data)
    assert response.status_code == 200, response.text
    return response.json()


def _study(client: Any) -> dict[str, Any]:
    return [_upload(client, data) for data in _study_files()][0]


def _datasets(client: Any, study: str) -> list[Dataset]:
    instances = client.get(f"/studies/{study}/instances").json()
    return [pydicom.dcmread(io.BytesIO(client.get(f"/instances/{i['ID']}/file").content))
            for i in instances]


def _files(client: Any, study: str) -> list[bytes]:
    return [client.get(f"/instances/{i['ID']}/file").content
            for i in client.get(f"/studies/{study}/instances").json()]


def _count(client: Any) -> int:
    return len(client.get("/instances").json())


def _error(response: Any, status: int = 400) -> str:
    assert response.status_code == status, response.text
    return response.json().get("Details", "")


# -- modification ---------------------------------------------------------------------

def test_modify_instance_answers_the_changed_file(lanthorn_client: Any) -> None:
    uploaded = _upload(lanthorn_client, _study_files()[2])
    response = lanthorn_client.post(f"/instances/{uploaded['ID']}/modify", json={
        "Replace": {"InstitutionName": "Elsewhere", "ReferencedImageSequence[0]."
                    "ReferencedSOPInstanceUID": "1.2.3.4"},
        "Remove": ["StationName"], "RemovePrivateTags": True})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom"
    changed = pydicom.dcmread(io.BytesIO(response.content))
    assert changed.InstitutionName == "Elsewhere" and "StationName" not in changed
    assert changed.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.3.4"
    assert not any(e.tag.is_private for e in changed)
    # A modified instance gets a new SOPInstanceUID, and stays in its series (as in Orthanc).
    assert changed.SOPInstanceUID != SOPS[2]
    assert changed.file_meta.MediaStorageSOPInstanceUID == changed.SOPInstanceUID
    assert (changed.StudyInstanceUID, changed.SeriesInstanceUID) == (STUDY, SERIES[1])
    assert _count(lanthorn_client) == 1  # the single-instance form stores nothing


def test_modify_study_gives_one_new_uid_per_original_uid(lanthorn_client: Any) -> None:
    first = _study(lanthorn_client)
    before = _files(lanthorn_client, first["ParentStudy"])
    last_change = lanthorn_client.get("/changes?last").json()["Last"]
    response = lanthorn_client.post(f"/studies/{first['ParentStudy']}/modify",
                                    json={"Replace": {"StudyDescription": "Renamed"}})
    assert response.status_code == 200, response.text
    result = response.json()
    new = result["ID"]
    assert result == {"Description": "REST API", "FailedInstancesCount": 0, "ID": new,
                      "InstancesCount": 3, "IsAnonymization": False,
                      "Path": f"/studies/{new}", "PatientID": first["ParentPatient"],
                      "Type": "Study"}
    datasets = _datasets(lanthorn_client, new)
    assert {d.StudyDescription for d in datasets} == {"Renamed"}
    assert len({d.StudyInstanceUID for d in datasets}) == 1
    assert datasets[0].StudyInstanceUID != STUDY
    series = {d.SOPInstanceUID: d.SeriesInstanceUID for d in datasets}
    assert len(set(series.values())) == 2 and not set(series.values()) & set(SERIES)
    assert not set(series) & set(SOPS)
    # The original study is untouched, byte for byte.
    assert _files(lanthorn_client, first["ParentStudy"]) == before
    assert lanthorn_client.get(f"/studies/{new}/metadata/ModifiedFrom").text == \
        first["ParentStudy"]
    new_series = lanthorn_client.get(f"/studies/{new}/series").json()
    assert {lanthorn_client.get(f"/series/{s['ID']}/metadata/ModifiedFrom").text
            for s in new_series} == {first["ParentSeries"],
                                     lanthorn_client.get(f"/instances/{_id(SOPS[2])}")
                                     .json()["ParentSeries"]}
    changes = lanthorn_client.get(f"/changes?since={last_change}&limit=100").json()["Changes"]
    assert [(c["ChangeType"], c["ID"]) for c in changes if c["ChangeType"] == "ModifiedStudy"] \
        == [("ModifiedStudy", new)]


def _id(sop: str) -> str:
    """The public ID of an instance of the test study."""
    return public_id(PHI["PatientID"], STUDY, SERIES[1] if sop == SOPS[2] else SERIES[0], sop)


def test_keep_source_false_removes_the_originals(lanthorn_client: Any) -> None:
    first = _study(lanthorn_client)
    response = lanthorn_client.post(f"/series/{first['ParentSeries']}/modify",
                                    json={"Replace": {"SeriesDescription": "x"},
                                          "KeepSource": False})
    assert response.status_code == 200 and response.json()["Type"] == "Series"
    assert lanthorn_client.get(f"/series/{first['ParentSeries']}").status_code == 404
    assert lanthorn_client.get(f"/instances/{_id(SOPS[2])}").status_code == 200
    assert _count(lanthorn_client) == 3  # two moved to the new series, one untouched


def test_modify_patient_and_keep_uids_with_force(lanthorn_client: Any) -> None:
    first = _study(lanthorn_client)
    response = lanthorn_client.post(f"/patients/{first['ParentPatient']}/modify", json={
        "Replace": {"PatientID": "NEW-ID", "PatientName": "New^Name"}, "Force": True,
        "Keep": ["StudyInstanceUID", "SeriesInstanceUID"], "KeepLabels": True})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["Type"] == "Patient" and result["ID"] == result["PatientID"]
    datasets = [pydicom.dcmread(io.BytesIO(lanthorn_client.get(f"/instances/{i}/file").content))
                for i in _instance_ids(lanthorn_client, result["ID"])]
    assert {(d.PatientID, str(d.PatientName)) for d in datasets} == {("NEW-ID", "New^Name")}
    assert {d.StudyInstanceUID for d in datasets} == {STUDY}
    assert {d.SeriesInstanceUID for d in datasets} == set(SERIES)
    assert not {d.SOPInstanceUID for d in datasets} & set(SOPS)


def _instance_ids(client: Any, patient: str) -> list[str]:
    return [i["ID"] for i in client.get(f"/patients/{patient}/instances").json()]


def test_keep_labels_copies_labels(lanthorn_client: Any) -> None:
    first = _study(lanthorn_client)
    assert lanthorn_client.put(f"/studies/{first['ParentStudy']}/labels/trial").status_code \
        == 200
    labelled = lanthorn_client.post(f"/studies/{first['ParentStudy']}/anonymize",
                                    json={"KeepLabels": True}).json()["ID"]
    bare = lanthorn_client.post(f"/studies/{first['ParentStudy']}/anonymize", json={}).json()["ID"]
    assert lanthorn_client.get(f"/studies/{labelled}/labels").json() == ["trial"]
    assert lanthorn_client.get(f"/studies/{bare}/labels").json() == []


def test_private_tags_with_a_private_creator(lanthorn_client: Any) -> None:
    uploaded = _upload(lanthorn_client, make_instance())
    response = lanthorn_client.post(f"/instances/{uploaded['ID']}/modify", json={
        "Replace": {"0011,1001": "note", "0011,1002": "data:application/octet-stream;base64,"
                    "AAEC"}, "PrivateCreator": "LANTHORN TEST"})
    changed = pydicom.dcmread(io.BytesIO(response.content))
    assert changed[0x00110010].value == "LANTHORN TEST"
    assert changed[0x00111001].value == b"note" and changed[0x00111002].value == b"\0\1\2"


@pytest.mark.lanthorn_config(DefaultPrivateCreator="SITE CREATOR")
def test_default_private_creator_from_the_configuration(lanthorn_client: Any) -> None:
    uploaded = _upload(lanthorn_client, make_instance())
    response = lanthorn_client.post(f"/instances/{uploaded['ID']}/modify",
                                    json={"Replace": {"0013,1001": "x"}})
    assert pydicom.dcmread(io.BytesIO(response.content))[0x00130010].value == "SITE CREATOR"


def test_replace_a_sequence_and_non_ascii_values(lanthorn_client: Any) -> None:
    uploaded = _upload(lanthorn_client, make_instance())
    response = lanthorn_client.post(f"/instances/{uploaded['ID']}/modify", json={
        "Replace": {"PatientName": "Żółw^Jürgen", "ReferencedStudySequence": [
            {"ReferencedSOPClassUID": "1.2.3", "ReferencedSOPInstanceUID": "1.2.3.4"}],
            "Rows": "8"}})
    changed = pydicom.dcmread(io.BytesIO(response.content))
    assert str(changed.PatientName) == "Żółw^Jürgen"
    assert changed.SpecificCharacterSet == "ISO_IR 192"
    assert changed.ReferencedStudySequence[0].ReferencedSOPInstanceUID == "1.2.3.4"


# -- identifiers and bad input --------------------------------------------------------------

@pytest.mark.parametrize(("level", "body", "message"), [
    # Orthanc 1.10.1's messages, except for removals and parents (its are terse or absent).
    ("studies", {"Replace": {"PatientID": "X"}},
     'Marking tag "PatientID" as to be replaced requires the "Force" option to be set to true'),
    ("studies", {"Replace": {"StudyInstanceUID": "1.2"}},
     'Marking tag "StudyInstanceUID" as to be replaced requires the "Force" option'),
    ("studies", {"Remove": ["StudyInstanceUID"]},
     "StudyInstanceUID identifies a resource: it cannot be removed"),
    ("series", {"Keep": ["SeriesInstanceUID"]},
     'Marking tag "SeriesInstanceUID" as to be kept requires the "Force" option'),
    ("studies", {"Replace": {"PatientID": "X"}, "Force": True},
     "When modifying a study, its parent's PatientID cannot be changed"),
    ("series", {"Replace": {"StudyInstanceUID": "1.2"}, "Force": True},
     "When modifying a series, its parent's StudyInstanceUID cannot be changed"),
    ("patients", {"Replace": {"PatientName": "X"}},
     'When modifying a patient, "Replace" must give it a new PatientID'),
    ("studies", {"Replace": {"NoSuchTag": "1"}}, 'unknown DICOM tag "NoSuchTag"'),
    ("studies", {"Remove": ["Sequence[x].PatientName"]}, "invalid tag path"),
    ("studies", {"Replace": {"StudyDescription": 5}}, 'the value of "StudyDescription"'),
    ("studies", {"Replace": {"Rows": "many"}}, "cannot set 00280010 (US)"),
    ("studies", {"Replace": {"StudyID": "longer than sixteen"}}, "cannot set 00200010 (SH)"),
    ("studies", {"Replace": {"StudyDescription": 5}, "Asynchronous": True},
     'the value of "StudyDescription"'),  # checked before a job is queued
    ("studies", {"Replace": {"StudyDescription": "x"}, "Transcode": "1.2.3"},
     'is not a transfer syntax UID'),
    ("studies", {"KeepSource": "no"}, '"KeepSource" must be a boolean'),
    ("studies", ["Replace"], "The body must contain a JSON object"),
])
def test_bad_requests_are_400_and_store_nothing(lanthorn_client: Any, level: str,
                                                body: Any, message: str) -> None:
    first = _study(lanthorn_client)
    ids = {"studies": first["ParentStudy"], "series": first["ParentSeries"],
           "patients": first["ParentPatient"]}
    before = lanthorn_client.get("/changes?last").json()["Last"]
    response = lanthorn_client.post(f"/{level}/{ids[level]}/modify", json=body)
    assert message in _error(response)
    assert _count(lanthorn_client) == 3
    assert lanthorn_client.get("/changes?last").json()["Last"] == before


def test_malformed_json_unknown_resources_and_versions(lanthorn_client: Any) -> None:
    first = _study(lanthorn_client)
    study = first["ParentStudy"]
    assert "JSON" in _error(lanthorn_client.post(f"/studies/{study}/anonymize",
                                                 content=b"{not json"))
    assert _error(lanthorn_client.post("/studies/0000/anonymize", json={}), 404)
    assert _error(lanthorn_client.post(f"/series/{study}/modify", json={}), 404)
    assert "DicomVersion" in _error(lanthorn_client.post(f"/studies/{study}/anonymize",
                                                         json={"DicomVersion": "1999"}))
    assert lanthorn_client.post(f"/studies/{study}/anonymize",
                                json={"DicomVersion": "2021b"}).status_code == 200
    # Client libraries send null for options they leave to the server.
    assert lanthorn_client.post(f"/studies/{study}/anonymize", json={
        "DicomVersion": None, "PrivateCreator": None, "Asynchronous": False, "Priority": 0,
        "Remove": [], "Replace": {}, "Keep": [], "Force": False}).status_code == 200
    assert "Resources" in _error(lanthorn_client.post("/tools/bulk-modify", json={}))
    assert "no resource" in _error(lanthorn_client.post(
        "/tools/bulk-anonymize", json={"Resources": ["nope"]}), 404)


def test_a_failure_undoes_the_operation_unless_permissive(lanthorn_client: Any) -> None:
    """0009,1002 is a US in one instance only: setting it to text fails there alone."""
    first = _study(lanthorn_client)
    body = {"Replace": {"0009,1002": "text"}}
    assert "cannot set 00091002 (US)" in _error(lanthorn_client.post(
        f"/studies/{first['ParentStudy']}/modify", json=body))
    assert _count(lanthorn_client) == 3
    response = lanthorn_client.post(f"/studies/{first['ParentStudy']}/modify",
                                    json={**body, "Permissive": True})
    assert response.status_code == 200
    assert (response.json()["InstancesCount"], response.json()["FailedInstancesCount"]) == (2, 1)


# -- anonymization ---------------------------------------------------------------------

def test_anonymize_study_applies_the_basic_profile(lanthorn_client: Any) -> None:
    first = _study(lanthorn_client)
    response = lanthorn_client.post(f"/studies/{first['ParentStudy']}/anonymize", json={})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["IsAnonymization"] is True and result["InstancesCount"] == 3
    files = _files(lanthorn_client, result["ID"])
    for data in files:  # no identifying value anywhere in the bytes (nested, private, meta)
        for value in [*PHI.values(), "PRIVATE-PHI", "Observer^Secret", "Secret meaning", STUDY,
                      *SERIES, *SOPS]:
            assert value.encode() not in data, value
    datasets = [pydicom.dcmread(io.BytesIO(data)) for data in files]
    by_number = {d.InstanceNumber: d for d in datasets}
    patient = {(d.PatientID, str(d.PatientName)) for d in datasets}
    assert len(patient) == 1 and next(iter(patient))[1].startswith("Anonymized")
    for d in datasets:
        assert (d.PatientIdentityRemoved, d.StudyDate, d.AccessionNumber) == ("YES", "", "")
        assert "Basic Profile" in d.DeidentificationMethod
        assert "StudyDescription" not in d and "OtherPatientIDs" not in d  # X
        assert (d.InstitutionName, d.SeriesDate, d.ContentDate) == \
            ("ANONYMIZED", "19000101", "19000101")  # D, X/D, Z/D: a dummy
        assert d.AcquisitionDate == ""  # X/Z: empty
        assert not any(e.tag.is_private for e in d)
        assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
    assert len({d.StudyInstanceUID for d in datasets}) == 1
    assert len({d.FrameOfReferenceUID for d in datasets}) == 1
    # The reference inside the sequence follows its target's new UID (X/Z/U*).
    assert by_number[3].ReferencedImageSequence[0].ReferencedSOPInstanceUID == \
        by_number[1].SOPInstanceUID
    assert by_number[3].VerifyingObserverSequence == []  # a D sequence is emptied
    assert lanthorn_client.get(f"/studies/{result['ID']}/metadata/AnonymizedFrom").text == \
        first["ParentStudy"]
    changes = lanthorn_client.get("/changes?limit=1000").json()["Changes"]
    assert ("AnonymizedStudy", result["ID"]) in [(c["ChangeType"], c["ID"]) for c in changes]


def test_anonymize_series_and_patient(lanthorn_client: Any) -> None:
    first = _study(lanthorn_client)
    later = _upload(lanthorn_client, make_instance(PatientID=PHI["PatientID"]))
    series = lanthorn_client.post(f"/series/{first['ParentSeries']}/anonymize", json={}).json()
    assert (series["Type"], series["InstancesCount"]) == ("Series", 2)
    new_study = lanthorn_client.get(f"/series/{series['ID']}/study").json()
    assert new_study["MainDicomTags"]["StudyInstanceUID"] != STUDY
    patient = lanthorn_client.post(f"/patients/{first['ParentPatient']}/anonymize",
                                   json={}).json()
    assert (patient["Type"], patient["InstancesCount"]) == ("Patient", 4)
    assert patient["ID"] == patient["PatientID"]
    studies = lanthorn_client.get(f"/patients/{patient['ID']}/studies").json()
    assert len(studies) == 2  # both studies of the patient, under one pseudonymous patient
    assert later["ParentStudy"] not in [s["ID"] for s in studies]
    assert lanthorn_client.get(f"/patients/{patient['ID']}/metadata/AnonymizedFrom").text == \
        first["ParentPatient"]
    changes = lanthorn_client.get("/changes?limit=1000").json()["Changes"]
    assert {"AnonymizedSeries", "AnonymizedPatient"} <= {c["ChangeType"] for c in changes}


def test_anonymize_keep_replace_remove_and_private_tags(lanthorn_client: Any) -> None:
    uploaded = _upload(lanthorn_client, _study_files()[2])
    response = lanthorn_client.post(f"/instances/{uploaded['ID']}/anonymize", json={
        "Keep": ["StudyDescription", "VerifyingObserverSequence[*].VerifyingObserverName"],
        "KeepPrivateTags": True, "Replace": {"PatientName": "Chosen^Name"},
        "Remove": ["Modality"]})
    assert response.status_code == 200
    anonymized = pydicom.dcmread(io.BytesIO(response.content))
    assert anonymized.StudyDescription == PHI["StudyDescription"]
    kept_item = anonymized.VerifyingObserverSequence[0]
    assert kept_item.VerifyingObserverName == "Observer^Secret"
    assert "CodeMeaning" not in kept_item  # the sequence keeps only what Keep names
    assert str(anonymized.PatientName) == "Chosen^Name" and "Modality" not in anonymized
    assert anonymized[0x00091001].value == "PRIVATE-PHI"
    assert anonymized.StudyInstanceUID != STUDY  # anonymization renews every level's UIDs


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm",
                                  "image_dfl.dcm", "MR_small_bigendian.dcm", "rtplan.dcm",
                                  "test-SR.dcm", "waveform_ecg.dcm"])
def test_anonymize_real_files_keeps_their_pixels_and_syntax(lanthorn_client: Any,
                                                            name: str) -> None:
    original = pydicom.dcmread(get_testdata_file(name))
    uploaded = _upload(lanthorn_client, Path(get_testdata_file(name)).read_bytes())
    response = lanthorn_client.post(f"/instances/{uploaded['ID']}/anonymize", json={})
    assert response.status_code == 200, response.text
    anonymized = pydicom.dcmread(io.BytesIO(response.content))
    assert anonymized.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert anonymized.SOPInstanceUID != original.SOPInstanceUID
    assert anonymized.PatientName != original.get("PatientName") and \
        anonymized.PatientIdentityRemoved == "YES"
    if "PixelData" in original:
        assert anonymized.PixelData == original.PixelData
    stored = lanthorn_client.post(f"/studies/{uploaded['ParentStudy']}/anonymize", json={})
    assert stored.status_code == 200, stored.text


def test_bulk_modify_anonymize_and_delete(lanthorn_client: Any) -> None:
    first = _study(lanthorn_client)
    other = _upload(lanthorn_client, make_instance(PatientID="OTHER"))
    response = lanthorn_client.post("/tools/bulk-modify", json={
        "Resources": [_id(SOPS[0]), other["ID"]], "Replace": {"SeriesDescription": "bulk"}})
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["InstancesCount"], result["IsAnonymization"]) == (2, False)
    types = [r["Type"] for r in result["Resources"]]
    assert types == sorted(types, key=["Instance", "Series", "Study", "Patient"].index)
    assert types.count("Instance") == 2 and types.count("Patient") == 2
    # Level "Instance" (the default): the new instances join their original series.
    new_instance = next(r["ID"] for r in result["Resources"] if r["Type"] == "Instance")
    assert lanthorn_client.get(f"/instances/{new_instance}/series").json()["ID"] in \
        (first["ParentSeries"], other["ParentSeries"])
    response = lanthorn_client.post("/tools/bulk-anonymize", json={
        "Resources": [first["ParentStudy"], other["ParentStudy"]]})
    assert response.status_code == 200
    anonymized = [r for r in response.json()["Resources"] if r["Type"] == "Patient"]
    assert len(anonymized) == 2  # two original patients, two pseudonymous ones
    response = lanthorn_client.post("/tools/bulk-delete", json={
        "Resources": [first["ParentPatient"], other["ID"], _id(SOPS[0])]})
    assert response.status_code == 200
    assert lanthorn_client.get(f"/patients/{first['ParentPatient']}").status_code == 404
    assert lanthorn_client.get(f"/instances/{other['ID']}").status_code == 404
    assert _error(lanthorn_client.post("/tools/bulk-delete", json={"Resources": ["x"]}), 404)


def test_bulk_level_maps_uids_across_resources(lanthorn_client: Any) -> None:
    """Two instances given separately, modified at study level: one new study."""
    _study(lanthorn_client)
    response = lanthorn_client.post("/tools/bulk-modify", json={
        "Resources": [_id(SOPS[0]), _id(SOPS[2])], "Level": "Study",
        "Replace": {"StudyDescription": "split"}})
    assert response.status_code == 200, response.text
    studies = [r for r in response.json()["Resources"] if r["Type"] == "Study"]
    assert len(studies) == 1
    assert len(lanthorn_client.get(f"/studies/{studies[0]['ID']}/series").json()) == 2
    assert "Level" in _error(lanthorn_client.post("/tools/bulk-modify", json={
        "Resources": [_id(SOPS[0])], "Level": "Galaxy"}))


def test_an_interrupted_operation_resumes_from_its_state(lanthorn_server: Server,
                                                        lanthorn_client: Any) -> None:
    """What a job does across a restart: save ``state``, pass it back, finish once."""
    first = _study(lanthorn_client)
    request = modify.parse_request(lanthorn_server, {"Replace": {"StudyDescription": "r"}},
                                   anonymize=False, level=Level.STUDY,
                                   resource=first["ParentStudy"])
    state: dict[str, Any] = {}

    def stop_after_two(fraction: float) -> None:
        if state["Done"] == 2:
            raise InterruptedError("shutdown")

    with pytest.raises(InterruptedError):
        modify.run(lanthorn_server, request, stop_after_two, state)
    checkpoint = json.loads(json.dumps(state))  # as a job keeps it in the index
    fractions: list[float] = []
    result = modify.run(lanthorn_server, request, fractions.append, checkpoint)
    assert fractions == [1.0] and result["InstancesCount"] == 3
    datasets = _datasets(lanthorn_client, result["ID"])
    assert len(datasets) == 3 and len({d.StudyInstanceUID for d in datasets}) == 1
    assert _count(lanthorn_client) == 6


def _finished(client: Any, submitted: dict[str, Any]) -> dict[str, Any]:
    """The job once it has succeeded or failed."""
    assert submitted["Path"] == f"/jobs/{submitted['ID']}"
    deadline = time.monotonic() + 30
    while (job := client.get(submitted["Path"]).json())["State"] not in ("Success", "Failure"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


def test_asynchronous_anonymization_is_a_resource_modification_job(
        lanthorn_client: Any) -> None:
    first = _study(lanthorn_client)
    submitted = lanthorn_client.post(f"/studies/{first['ParentStudy']}/anonymize",
                                     json={"Asynchronous": True}).json()
    job = _finished(lanthorn_client, submitted)
    assert (job["Type"], job["State"]) == ("ResourceModification", "Success")
    assert (job["Content"]["InstancesCount"], job["Content"]["IsAnonymization"]) == (3, True)
    assert _count(lanthorn_client) == 6
    instance = lanthorn_client.post(f"/instances/{first['ID']}/modify",
                                    json={"Asynchronous": True})
    assert instance.status_code == 400


def test_transcode_writes_the_changed_files_in_the_asked_syntax(lanthorn_client: Any) -> None:
    first = _study(lanthorn_client)
    rle = "1.2.840.10008.1.2.5"
    result = lanthorn_client.post(f"/studies/{first['ParentStudy']}/modify", json={
        "Replace": {"StudyDescription": "small"}, "Transcode": rle}).json()
    datasets = _datasets(lanthorn_client, result["ID"])
    assert {d.file_meta.TransferSyntaxUID for d in datasets} == {rle}
    original = pydicom.dcmread(io.BytesIO(lanthorn_client.get(
        f"/instances/{first['ID']}/file").content))
    assert any((d.pixel_array == original.pixel_array).all() for d in datasets)
    single = lanthorn_client.post(f"/instances/{first['ID']}/modify",
                                  json={"Transcode": rle})
    assert pydicom.dcmread(io.BytesIO(single.content)).file_meta.TransferSyntaxUID == rle


def test_profile_table_is_read_from_the_standard() -> None:
    """A few rows checked by hand against PS3.15 Table E.1-1, and the range rules."""
    assert PROFILE[0x00100010] is Action.EMPTY          # Patient's Name: Z
    assert PROFILE[0x00081030] is Action.REMOVE         # Study Description: X
    assert PROFILE[0x0020000D] is Action.NEW_UID        # Study Instance UID: U
    assert PROFILE[0x00080080] is Action.DUMMY          # Institution Name: X/Z/D
    assert PROFILE[0x00081140] is Action.NEW_UID        # Referenced Image Sequence: X/Z/U*
    assert action_of(0x00091001) is Action.REMOVE       # private
    assert action_of(0x60003000) is Action.REMOVE       # overlay data
    assert action_of(0x50020010) is Action.REMOVE       # curve data
    assert action_of(0x00280010) is Action.KEEP         # Rows: not in the table
    assert len(PROFILE) > 300


# -- persistent pseudonyms ------------------------------------------------------------

@pytest.mark.lanthorn_config(PersistentPseudonyms={"Scope": "trial", "Uids": True})
def test_pseudonyms_persist_across_requests_and_a_restart(
        lanthorn_process: ServerProcess) -> None:
    server = lanthorn_process.start()
    client = httpx2.Client(base_url=server.url, timeout=30)
    second_study = make_instance(PatientID=PHI["PatientID"], PatientName=PHI["PatientName"])
    try:
        first = _study(client)
        other = _upload(client, second_study)
        a = client.post(f"/studies/{first['ParentStudy']}/anonymize", json={}).json()
        b = client.post(f"/studies/{other['ParentStudy']}/anonymize", json={}).json()
        assert a["PatientID"] == b["PatientID"]  # one returning patient, one pseudonym
        # Per request: another scope, or none, gives another identity.
        c = client.post(f"/studies/{first['ParentStudy']}/anonymize",
                        json={"PersistentPseudonyms": False}).json()
        assert c["PatientID"] != a["PatientID"]
        server.stop()
        server.start()
        again = client.post(f"/studies/{first['ParentStudy']}/anonymize", json={}).json()
        assert again["PatientID"] == a["PatientID"]
        assert again["ID"] == a["ID"]  # "Uids": the same study, instances AlreadyStored
        assert len(client.get(f"/studies/{a['ID']}/instances").json()) == 3
        patient = client.get(f"/patients/{a['PatientID']}").json()["MainDicomTags"]
        found = client.post("/tools/pseudonyms", json={"Scope": "trial",
                                                       "Pseudonym": patient["PatientID"]})
        mappings = found.json()["Mappings"]
        assert {(m["Kind"], m["Original"], m["Pseudonym"]) for m in mappings
                if m["Kind"] != "UID"} == {
            ("PatientID", PHI["PatientID"], patient["PatientID"]),
            ("PatientName", PHI["PatientID"], patient["PatientName"])}
        assert sum(m["Kind"] == "UID" for m in mappings) > 6
        deleted = client.post("/tools/pseudonyms", json={
            "Scope": "trial", "PatientID": PHI["PatientID"], "Delete": True}).json()
        assert deleted["Deleted"] == len(mappings)
        fresh = client.post(f"/studies/{other['ParentStudy']}/anonymize", json={}).json()
        assert fresh["PatientID"] != a["PatientID"]
        assert "either" in _error(client.post("/tools/pseudonyms", json={}))
    finally:
        client.close()


def test_pseudonyms_are_off_unless_asked(lanthorn_client: Any) -> None:
    first = _study(lanthorn_client)
    study = first["ParentStudy"]
    one = lanthorn_client.post(f"/studies/{study}/anonymize", json={}).json()
    two = lanthorn_client.post(f"/studies/{study}/anonymize", json={}).json()
    assert one["PatientID"] != two["PatientID"]
    scoped = [lanthorn_client.post(f"/studies/{study}/anonymize", json={
        "PersistentPseudonyms": {"Scope": "x"}}).json() for _ in range(2)]
    assert scoped[0]["PatientID"] == scoped[1]["PatientID"]
    assert scoped[0]["ID"] != scoped[1]["ID"]  # without "Uids", new UIDs each time
    assert "PersistentPseudonyms" in _error(lanthorn_client.post(
        f"/studies/{study}/anonymize", json={"PersistentPseudonyms": "yes"}))
    assert json.loads(lanthorn_client.post("/tools/pseudonyms", json={
        "Scope": "x", "PatientID": "unknown"}).text)["Mappings"] == []


# -- split and merge --------------------------------------------------------------------

def test_split_series_into_a_new_study(lanthorn_client: Any) -> None:
    first = _study(lanthorn_client)
    study = first["ParentStudy"]
    answer = lanthorn_client.post(f"/studies/{study}/split", json={
        "Series": [first["ParentSeries"]], "Replace": {"StudyDescription": "Split",
                                                       "PatientID": "OTHER"},
        "Remove": ["AccessionNumber"]})
    assert answer.status_code == 200, answer.text
    split = answer.json()
    assert set(split) == {"Description", "FailedInstancesCount", "InstancesCount",
                          "TargetStudy", "TargetStudyUID"}
    assert (split["InstancesCount"], split["FailedInstancesCount"]) == (2, 0)
    moved = _datasets(lanthorn_client, split["TargetStudy"])
    assert {d.StudyInstanceUID for d in moved} == {split["TargetStudyUID"]} != {STUDY}
    assert {(d.StudyDescription, d.PatientID) for d in moved} == {("Split", "OTHER")}
    assert all("AccessionNumber" not in d for d in moved)
    assert {d.SeriesInstanceUID for d in moved} & {*SERIES} == set()
    assert {d.SOPInstanceUID for d in moved} & {*SOPS} == set()
    assert len({d.SeriesInstanceUID for d in moved}) == 1
    # KeepSource is false by default: the series left the original study.
    left = lanthorn_client.get(f"/studies/{study}/series").json()
    assert [s["MainDicomTags"]["SeriesInstanceUID"] for s in left] == [SERIES[1]]


def test_split_instances_keeping_the_source(lanthorn_client: Any) -> None:
    first = _study(lanthorn_client)
    split = lanthorn_client.post(f"/studies/{first['ParentStudy']}/split", json={
        "Instances": [first["ID"]], "KeepSource": True}).json()
    assert split["InstancesCount"] == 1 and _count(lanthorn_client) == 4
    assert lanthorn_client.get(f"/studies/{split['TargetStudy']}").json()["MainDicomTags"][
        "StudyInstanceUID"] == split["TargetStudyUID"]


def test_split_refuses_what_it_cannot_do(lanthorn_client: Any) -> None:
    first = _study(lanthorn_client)
    other = _upload(lanthorn_client, make_instance())
    url = f"/studies/{first['ParentStudy']}/split"
    assert "Series" in _error(lanthorn_client.post(url, json={}))
    assert "not in the patient or study module" in _error(lanthorn_client.post(url, json={
        "Series": [first["ParentSeries"]], "Replace": {"SeriesDescription": "x"}}))
    assert "not in the patient or study module" in _error(lanthorn_client.post(url, json={
        "Series": [first["ParentSeries"]], "Replace": {"StudyInstanceUID": "1.2.3"}}))
    assert "is not part of the study" in _error(lanthorn_client.post(url, json={
        "Instances": [other["ID"]]}))
    _error(lanthorn_client.post(url, json={"Series": ["nope"]}), 404)
    _error(lanthorn_client.post(f"/studies/{first['ParentSeries']}/split",
                                json={"Series": [first["ParentSeries"]]}), 404)
    assert _count(lanthorn_client) == 4


def test_merge_takes_the_target_study_attributes(lanthorn_client: Any) -> None:
    target = _study(lanthorn_client)
    source = _upload(lanthorn_client, make_instance(PatientID="SOURCE", PatientName="Src^Pat",
                                                    StudyDescription="Source study"))
    answer = lanthorn_client.post(f"/studies/{target['ParentStudy']}/merge", json={
        "Resources": [source["ParentStudy"]]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"Description": "REST API", "FailedInstancesCount": 0,
                             "InstancesCount": 1, "TargetStudy": target["ParentStudy"]}
    merged = _datasets(lanthorn_client, target["ParentStudy"])
    assert len(merged) == 4 and {d.StudyInstanceUID for d in merged} == {STUDY}
    newcomer = next(d for d in merged if d.SOPInstanceUID not in SOPS)
    assert (newcomer.PatientID, newcomer.StudyDescription, newcomer.AccessionNumber) == \
        (PHI["PatientID"], PHI["StudyDescription"], PHI["AccessionNumber"])
    assert newcomer.SeriesInstanceUID not in SERIES
    assert lanthorn_client.get(f"/studies/{source['ParentStudy']}").status_code == 404
    assert "already part of" in _error(lanthorn_client.post(
        f"/studies/{target['ParentStudy']}/merge", json={"Resources": [target["ID"]]}))
    assert "Resources" in _error(lanthorn_client.post(
        f"/studies/{target['ParentStudy']}/merge", json={}))


def test_asynchronous_split_and_merge_are_jobs(lanthorn_client: Any) -> None:
    first = _study(lanthorn_client)
    study = first["ParentStudy"]
    split = _finished(lanthorn_client, lanthorn_client.post(f"/studies/{study}/split", json={
        "Series": [first["ParentSeries"]], "Asynchronous": True}).json())
    assert (split["Type"], split["State"]) == ("SplitStudy", "Success")
    assert split["Content"]["InstancesCount"] == 2
    merge = _finished(lanthorn_client, lanthorn_client.post(f"/studies/{study}/merge", json={
        "Resources": [split["Content"]["TargetStudy"]], "Asynchronous": True}).json())
    assert (merge["Type"], merge["State"]) == ("MergeStudy", "Success")
    assert merge["Content"]["TargetStudy"] == study
    assert len(lanthorn_client.get(f"/studies/{study}/instances").json()) == 3
    assert len(lanthorn_client.get("/studies").json()) == 1
