"""Every file of pydicom's test suite either round-trips through the REST API or is
refused cleanly; and where Orthanc accepted a file, we give it the same public IDs.

The test classifies each file on its own (with pydicom), so that a new pydicom release
with new test files is covered without editing lists here.
"""

from __future__ import annotations

import io
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
)

from lanthorn.dicom import (
    element_string,
    file_meta_information,
    main_tag_values,
    parse_instance,
    read_file,
    read_plain_file,
)
from lanthorn.model import MainTags
from lanthorn.testing import CT_IMAGE_STORAGE

# Several files are malformed on purpose (bad VRs, explicit/implicit VR mix-ups): pydicom
# reads them leniently, warning as it goes, in the server as in this test.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom")

TEST_FILES = Path(os.path.dirname(get_testdata_file("CT_small.dcm")))
ORTHANC = json.loads((Path(__file__).parent / "fixtures" / "orthanc_ids.json").read_text())
#: Documented known cases (the classification below finds them on its own).
KNOWN_TRUNCATED = {"MR_truncated.dcm", "rtplan_truncated.dcm"}
UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"}
NUMBER_VRS = {"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "US or SS"}
#: Orthanc reports longer values as "TooLong" instead of their value.
MAX_LENGTH = 256
#: Dataset trailing padding is not an attribute; Orthanc does not show it.
PADDING = 0xFFFCFFFC


@dataclass(frozen=True)
class Sample:
    name: str  # relative to pydicom's test_files, with "/"
    data: bytes
    problem: str | None  # why the file cannot be stored, or None


@cache
def samples() -> tuple[Sample, ...]:
    files = sorted(p for p in TEST_FILES.rglob("*") if p.is_file())
    return tuple(_classify(p.relative_to(TEST_FILES).as_posix(), p.read_bytes()) for p in files)


def _classify(name: str, data: bytes) -> Sample:
    if data[128:132] != b"DICM":
        return Sample(name, data, "no DICM prefix")
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), defer_size=None)
    except (InvalidDicomError, EOFError, ValueError) as exc:
        return Sample(name, data, f"unreadable ({exc})")
    if _truncated(dataset):  # first, while every element is still raw
        return Sample(name, data, "truncated")
    if "TransferSyntaxUID" not in dataset.file_meta:
        return Sample(name, data, "no TransferSyntaxUID")
    if dataset.file_meta.get("MediaStorageSOPClassUID") == MediaStorageDirectoryStorage:
        return Sample(name, data, "DICOMDIR")
    if not all(dataset.get(keyword) for keyword in UIDS):
        return Sample(name, data, "a UID is missing")
    return Sample(name, data, None)


def _truncated(dataset: Dataset) -> bool:
    """Some element (read raw, without conversion) has fewer bytes than its length says."""
    for tag in list(dataset.keys()):  # noqa: SIM118 - get_item needs the tags
        raw = dataset.get_item(tag)
        if isinstance(raw, RawDataElement) and raw.length != 0xFFFFFFFF \
                and raw.value is not None and len(raw.value) < raw.length:
            return True
    return False


def test_main_tags_of_storable_files_read_as_pydicom_decodes_them() -> None:
    """Ingest reads some main tags from raw bytes (test_dicom_values.py): the same strings."""
    storable = [s for s in samples() if s.problem is None]
    assert len(storable) > 40
    for sample in storable:
        decoded = pydicom.dcmread(io.BytesIO(sample.data))
        expected = {level: {tag: element_string(decoded[tag]) or "" for tag in tags
                            if tag in decoded}
                    for level, tags in MainTags().by_level.items()}
        dataset = parse_instance(sample.data).dataset
        assert main_tag_values(dataset, MainTags()) == expected, sample.name


def test_plain_files_are_read_as_dcmread_reads_them() -> None:
    """Ingest reads most files with pydicom's ``read_dataset`` directly, not ``dcmread``:
    the same File Meta Information, elements (raw, where pydicom left them raw),
    encoding, preamble, and position where reading stopped, truncated files included."""
    plain = 0
    for sample in samples():
        stream = io.BytesIO(sample.data)
        ours = read_plain_file(stream, sample.data)
        if ours is None:
            continue
        plain += 1
        reference_stream = io.BytesIO(sample.data)
        reference = pydicom.dcmread(reference_stream)
        assert stream.tell() == reference_stream.tell(), sample.name
        assert list(ours.values()) == list(reference.values()), sample.name
        assert [(e.tag, e.VR, e.value) for e in ours.file_meta] == \
            [(e.tag, e.VR, e.value) for e in reference.file_meta], sample.name
        assert (ours.original_encoding, ours.file_meta.original_encoding, ours.preamble) == \
            (reference.original_encoding, reference.file_meta.original_encoding,
             reference.preamble), sample.name
    assert plain > 150  # of pydicom 3.0.2's 163 with a DICM prefix: the rule


#: A command set element, (0000,0002) Affected SOP Class UID in implicit VR as PS3.7
#: encodes it, which a file may carry before its data set; and a data set element.
COMMAND_SET_ELEMENT = b"\0\0\2\0" + struct.pack("<I", 6) + b"1.2.3\0"
PATIENT_ID_ELEMENT = b"\x10\0\x20\0LO" + struct.pack("<H", 4) + b"ABCD"


@pytest.mark.parametrize("data_set", [b"", COMMAND_SET_ELEMENT + PATIENT_ID_ELEMENT],
                         ids=["no data set", "command set first"])
def test_files_unlike_the_plain_ones_are_read_as_dcmread_reads_them(data_set: bytes) -> None:
    """pydicom reads an empty data set as implicit VR, and command set elements in
    implicit VR whatever the transfer syntax: such files are not read as plain ones."""
    data = file_meta_information(CT_IMAGE_STORAGE, "1.2.3.4", ExplicitVRLittleEndian,
                                 ("1.2.3.4.5", "TEST")) + data_set
    dataset, end = read_file(data)
    reference_stream = io.BytesIO(data)
    reference = pydicom.dcmread(reference_stream)
    assert end == reference_stream.tell() == len(data)
    assert list(dataset.values()) == list(reference.values())
    assert dataset.original_encoding == reference.original_encoding


def test_a_plain_files_transfer_syntax_is_read_as_pydicom_reads_the_uid() -> None:
    """pydicom strips a UID of any whitespace: implicit VR, here, despite the tab."""
    data = file_meta_information(CT_IMAGE_STORAGE, "1.2.3.4", ImplicitVRLittleEndian + "\t",
                                 ("1.2.3.4.5", "TEST")) \
        + b"\x10\0\x20\0" + struct.pack("<I", 4) + b"ABCD"  # PatientID, implicit VR
    assert read_plain_file(io.BytesIO(data), data) is not None
    dataset, end = read_file(data)
    reference_stream = io.BytesIO(data)
    reference = pydicom.dcmread(reference_stream)
    assert end == reference_stream.tell() == len(data)
    assert list(dataset.values()) == list(reference.values())
    assert dataset.original_encoding == reference.original_encoding == (True, True)


@pytest.mark.lanthorn_config(OverwriteInstances=True)
def test_storable_files_round_trip(lanthorn_client: Any) -> None:
    """Identical bytes back, the tags pydicom reads, and Orthanc's public IDs."""
    storable = [s for s in samples() if s.problem is None]
    last: dict[str, Sample] = {}  # by instance ID: for shared SOPInstanceUIDs, the last one
    failures = []
    for sample in storable:
        response = lanthorn_client.post("/instances", content=sample.data)
        if response.status_code != 200:
            failures.append(f"{sample.name}: HTTP {response.status_code} {response.text}")
            continue
        answer = response.json()
        last[answer["ID"]] = sample
        orthanc = ORTHANC["files"][sample.name]
        if orthanc["status"] == 200:
            keys = ("ID", "ParentPatient", "ParentStudy", "ParentSeries")
            ours, theirs = ({k: a[k] for k in keys} for a in (answer, orthanc["answer"]))
            if ours != theirs:
                failures.append(f"{sample.name}: IDs {ours} != Orthanc's {theirs}")
    for instance, sample in last.items():
        stored = lanthorn_client.get(f"/instances/{instance}/file").content
        if stored != sample.data:
            failures.append(f"{sample.name}: the stored file differs")
        tags = lanthorn_client.get(f"/instances/{instance}/tags").json()
        failures += [f"{sample.name}: {problem}" for problem in _compare_tags(sample.data, tags)]
    assert not failures, "\n".join(failures)
    assert len(last) == lanthorn_client.get("/statistics").json()["CountInstances"]


def _compare_tags(data: bytes, tags: dict[str, Any]) -> list[str]:
    dataset = pydicom.dcmread(io.BytesIO(data))
    expected = {f"{e.tag.group:04x},{e.tag.element:04x}": e for e in dataset if e.tag != PADDING}
    if set(tags) != set(expected):
        return [f"tags {sorted(set(tags) ^ set(expected))} differ"]
    problems = []
    for key, element in expected.items():
        ours = tags[key]
        if element.VR == "SQ":
            if ours["Type"] != "Sequence" or len(ours["Value"]) != len(element.value):
                problems.append(f"{key}: {ours} has not {len(element.value)} items")
        elif element.VR in NUMBER_VRS:  # binary numbers: compare them as numbers
            values = _values(element.value)
            # Orthanc prints them with 17 significant digits (see CT_small in the shapes).
            too_long = len("\\".join(format(v, ".17g") for v in values)) > MAX_LENGTH
            if (ours["Type"] == "TooLong") != too_long or not too_long and \
                    [float(v) for v in ours["Value"].split("\\") if v] != values:
                problems.append(f"{key}: {ours} instead of {values}")
        elif element.VR not in BINARY_VRS and not isinstance(element.value, bytes):
            value = _text(element.value)
            wanted = ("String", value) if len(value) <= MAX_LENGTH else ("TooLong", None)
            if (ours["Type"], ours["Value"]) != wanted:
                problems.append(f"{key}: {ours} instead of {wanted}")
    return problems


def _values(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, MultiValue | list) else [value]


def _text(value: Any) -> str:
    """A value as one string, several values joined by backslashes, without padding."""
    return "\\".join(str(v).rstrip(" ") for v in _values(value))


def test_other_files_are_refused_and_leave_nothing_behind(
        lanthorn_client: Any, server_state: Callable[[], object]) -> None:
    lanthorn_client.post("/instances", content=(TEST_FILES / "MR_small.dcm").read_bytes())
    before = server_state()
    refused = [s for s in samples() if s.problem is not None]
    # On purpose, files without file meta are refused (Orthanc guesses their encoding).
    failures = []
    for sample in refused:
        response = lanthorn_client.post("/instances", content=sample.data)
        body = response.json()
        if response.status_code != 400 or not body.get("Details") or not body.get("Message"):
            failures.append(f"{sample.name} ({sample.problem}): {response.status_code} {body}")
        if server_state() != before:
            failures.append(f"{sample.name} ({sample.problem}) left something behind")
        if ORTHANC["files"][sample.name]["status"] == 200 and sample.problem != "no DICM prefix":
            failures.append(f"{sample.name}: Orthanc stores it, why not us ({sample.problem})?")
    assert not failures, "\n".join(failures)
    assert {s.name for s in refused if s.problem == "truncated"} == KNOWN_TRUNCATED


@pytest.mark.parametrize("charset", ["ISO_IR 100", "ISO_IR 192"])
def test_non_ascii_text_round_trips(charset: str, lanthorn_client: Any,
                                    ct_instance: Callable[..., bytes]) -> None:
    """pydicom's files are nearly all ASCII: check text in the two usual character sets."""
    data = ct_instance(SpecificCharacterSet=charset, PatientName="Müller^Jürgen",
                       StudyDescription="Étude")
    answer = lanthorn_client.post("/instances", content=data).json()
    assert lanthorn_client.get(f"/instances/{answer['ID']}/file").content == data
    tags = lanthorn_client.get(f"/instances/{answer['ID']}/simplified-tags").json()
    assert (tags["PatientName"], tags["StudyDescription"]) == ("Müller^Jürgen", "Étude")
    patient = lanthorn_client.get(f"/patients/{answer['ParentPatient']}").json()
    assert patient["MainDicomTags"]["PatientName"] == "Müller^Jürgen"
