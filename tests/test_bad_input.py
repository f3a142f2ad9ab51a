"""Bad input: mutated DICOM files never crash, hang or corrupt the server.

About a hundred files are built in memory, with a fixed seed, from pydicom's test
files: truncations, bit flips, patched element lengths and VRs, huge declared lengths,
sequences nested hundreds of levels deep and sequences that never end. All of them go
to the REST API in-process (where warnings are errors), a sample to a real ``lanthorn
serve`` over REST and C-STORE. Every answer comes in time; a refusal is a 4xx with
Orthanc's error object and a reason (over DICOM: a failure status with an Error
Comment), never a 5xx; what is accepted comes back byte for byte; the index and the
storage area still agree afterwards.
"""

from __future__ import annotations

import functools
import io
import random
import re
import struct
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx2
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from conftest import StoreScu, split_file_meta
from lanthorn.check import check
from lanthorn.dicom import MAX_SEQUENCE_DEPTH, parse_instance
from lanthorn.errors import BadFileFormat
from lanthorn.server import Server
from lanthorn.testing import ServerProcess, make_instance

SEED = 20260301
SOURCES = ("CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "rtplan.dcm",
           "MR_small_RLE.dcm", "JPEG2000.dcm", "image_dfl.dcm")
MUTATIONS_PER_KIND = 3
#: Seconds an answer may take: parsing a corrupt file must fail fast, never wait for bytes.
ANSWER_WITHIN = 10.0
#: VRs whose explicit-VR header has a 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT",
                      "UV"})
HUGE_LENGTHS = (0xFFFFFFF0, 0xFFFFFFFE, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000)
BAD_VRS = (b"ZZ", b"\0\0", b"SQ", b"OB", b"UN", b"US", b"DS", b"AT", b"xx", b"UT")
UNDEFINED = 0xFFFFFFFF
ITEM = struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED)
ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
SEQUENCE_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
#: The reason given for a sequence that never ends: ours, or pydicom's when it stops.
NEVER_ENDS = "truncated|No tag to read"


@dataclass(frozen=True)
class Case:
    """One file of the corpus; ``refusal``, when known, matches the reason it must give."""

    name: str
    data: bytes
    refusal: str | None = None


# -- the corpus -------------------------------------------------------------------------

@dataclass(frozen=True)
class LengthField:
    """Where an element's length (and, in explicit VR, its VR) sits in the file."""

    offset: int
    size: int
    vr_offset: int | None
    byte_order: Literal["little", "big"]

    def decode(self, data: bytes) -> int:
        return int.from_bytes(data[self.offset:self.offset + self.size], self.byte_order)

    def encode(self, value: int) -> bytes:
        return (value % 256 ** self.size).to_bytes(self.size, self.byte_order)


def _length_fields(data: bytes) -> list[LengthField]:
    """Where the top-level elements keep their lengths (unknown in a deflated file)."""
    dataset = pydicom.dcmread(io.BytesIO(data))
    syntax = dataset.file_meta.TransferSyntaxUID
    order: Literal["little", "big"] = "little" if syntax.is_little_endian else "big"
    fields: list[LengthField] = []
    if syntax.is_deflated:
        return fields
    for tag in dataset.keys():  # noqa: SIM118 - raw elements, with their positions
        raw = dataset.get_item(tag)
        if not isinstance(raw, RawDataElement):
            continue
        if syntax.is_implicit_VR:
            fields.append(LengthField(raw.value_tell - 4, 4, None, order))
        elif raw.VR in LONG_VRS:
            fields.append(LengthField(raw.value_tell - 4, 4, raw.value_tell - 8, order))
        else:
            fields.append(LengthField(raw.value_tell - 2, 2, raw.value_tell - 4, order))
    return fields


def _patch(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value):]


def _truncated(rng: random.Random, data: bytes, _: list[LengthField]) -> bytes:
    return data[:rng.randrange(1, len(data))]


def _bit_flips(rng: random.Random, data: bytes, _: list[LengthField]) -> bytes:
    """Flipped bits in the data set only, so that the file can still go over C-STORE."""
    start = split_file_meta(data)[1]
    flipped = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        flipped[rng.randrange(start, len(data))] ^= 1 << rng.randrange(8)
    return bytes(flipped)


def _wrong_length(rng: random.Random, data: bytes, fields: list[LengthField]) -> bytes:
    field = rng.choice(fields)
    old = field.decode(data)
    new = rng.choice([0, 1, old - 1, old + 1, old + rng.randint(2, 400),
                      rng.getrandbits(8 * field.size)])
    return _patch(data, field.offset, field.encode(new))


def _huge_length(rng: random.Random, data: bytes, fields: list[LengthField]) -> bytes:
    field = rng.choice([f for f in fields if f.size == 4] or fields)
    return _patch(data, field.offset, field.encode(rng.choice(HUGE_LENGTHS)))


def _bad_vr(rng: random.Random, data: bytes, fields: list[LengthField]) -> bytes:
    field = rng.choice([f for f in fields if f.vr_offset is not None])
    return _patch(data, field.vr_offset or 0, rng.choice(BAD_VRS))


Mutation = Callable[[random.Random, bytes, list[LengthField]], bytes]


def _mutations(fields: list[LengthField]) -> dict[str, Mutation]:
    """What applies to a file: positions are unknown in a deflated one, VRs in implicit."""
    mutations: dict[str, Mutation] = {"truncated": _truncated, "bit flips": _bit_flips}
    if fields:
        mutations |= {"wrong length": _wrong_length, "huge length": _huge_length}
    if any(f.vr_offset is not None for f in fields):
        mutations["bad VR"] = _bad_vr
    return mutations


def _sequence_header(group: int, element: int) -> bytes:
    """An explicit VR little endian SQ element of undefined length."""
    return struct.pack("<HH2sHI", group, element, b"SQ", 0, UNDEFINED)


def _instance(name: str) -> bytes:
    """A valid small CT whose UIDs are drawn from ``name``: the same on every run."""
    keywords = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    return make_instance(seed=0, **{k: generate_uid(entropy_srcs=[name, k]) for k in keywords})


def _pixel_data_offset(data: bytes) -> int:
    return data.rindex(struct.pack("<HH2s", 0x7FE0, 0x0010, b"OW"))


def _before_pixels(inserted: bytes) -> Callable[[bytes], bytes]:
    def insert(data: bytes) -> bytes:
        pixels = _pixel_data_offset(data)
        return data[:pixels] + inserted + data[pixels:]
    return insert


def _nested(depth: int) -> Callable[[bytes], bytes]:
    """Content Sequences of undefined length, each the only item of its parent."""
    opened = (_sequence_header(0x0040, 0xA730) + ITEM) * depth
    return _before_pixels(opened + (ITEM_END + SEQUENCE_END) * depth)


def _nested_defined_lengths(depth: int) -> Callable[[bytes], bytes]:
    """The same written by pydicom with explicit lengths (read lazily, level by level)."""
    def build(data: bytes) -> bytes:
        item = Dataset()
        item.CodeValue = "LEAF"
        for _ in range(depth):
            parent = Dataset()
            parent.ContentSequence = Sequence([item])
            parent["ContentSequence"].is_undefined_length = False
            item = parent
        dataset = pydicom.dcmread(io.BytesIO(data))
        dataset.ContentSequence = item.ContentSequence
        dataset["ContentSequence"].is_undefined_length = False
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()
    return build


def _group_length_as_sequence(depth: int) -> Callable[[bytes], bytes]:
    """(0002,0000) made a nested sequence with a bad value at the bottom: pydicom formats
    it into a message that grows about 2.6 times a level (1 GB at 14 levels)."""
    bad = struct.pack("<HH2sH3s", 0x0002, 0x0000, b"UL", 3, b"abc")
    nested = (_sequence_header(0x0002, 0x0000) + (ITEM + _sequence_header(0x0040, 0xA730)) * depth
              + ITEM + bad + ITEM_END + (SEQUENCE_END + ITEM_END) * depth + SEQUENCE_END)
    return lambda data: data[:132] + nested + data[132 + 12:]  # instead of the UL


def _meta_only(data: bytes) -> bytes:
    return data[:split_file_meta(data)[1]]


def _structural_cases(rng: random.Random) -> list[Case]:
    """Built on valid instances: name -> (how, the reason a refusal must give)."""
    deep, deeper = MAX_SEQUENCE_DEPTH + 1, 5000
    leaf = struct.pack("<HH2sH4s", 0x0008, 0x0100, b"SH", 4, b"LEAF")
    builders: dict[str, tuple[Callable[[bytes], bytes], str | None]] = {
        "nested 50 levels": (_nested(50), None),
        f"nested {deep} levels": (_nested(deep), "nested"),
        f"nested {deeper} levels": (_nested(deeper), "nested"),
        "nested 50 levels, defined lengths": (_nested_defined_lengths(50), None),
        "nested 200 levels, defined lengths": (_nested_defined_lengths(200), "nested"),
        "sequence never ends": (_before_pixels(_sequence_header(0x0040, 0xA730) + ITEM + leaf),
                                NEVER_ENDS),
        "sequence never ends at the end": (
            lambda data: data + _sequence_header(0xFFFA, 0xFFFA) + ITEM, NEVER_ENDS),
        "cut inside the pixel data header": (lambda data: data[:_pixel_data_offset(data) + 5],
                                             "truncated"),
        "group length as a nested sequence": (_group_length_as_sequence(6), "not a UL"),
        "empty": (lambda data: b"", None),
        "garbage": (lambda data: rng.randbytes(2000), None),
        "preamble only": (lambda data: bytes(128) + b"DICM", None),
        "file meta only": (_meta_only, None),
        "random data set": (lambda data: _meta_only(data) + rng.randbytes(2000), None),
    }
    return [Case(name, build(_instance(name)), refusal)
            for name, (build, refusal) in builders.items()]


def _source(name: str, number: int) -> bytes:
    """A test file as an instance of its own (a new SOP Instance UID, drawn from the
    name and number), so that every mutation that is accepted is stored and compared."""
    dataset = pydicom.dcmread(io.BytesIO(Path(get_testdata_file(name)).read_bytes()))  # type: ignore[arg-type]
    uid = generate_uid(entropy_srcs=[name, str(number)])
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = uid
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def _mutated(rng: random.Random, name: str) -> list[Case]:
    """Each mutation that applies to the file, MUTATIONS_PER_KIND times."""
    kinds = list(_mutations(_length_fields(_source(name, 0))))
    cases = []
    for number in range(len(kinds) * MUTATIONS_PER_KIND):
        data = _source(name, number)
        fields = _length_fields(data)
        kind = kinds[number % len(kinds)]
        cases.append(Case(f"{name} {kind} {number}", _mutations(fields)[kind](rng, data, fields)))
    return cases


@functools.cache
def corpus() -> tuple[Case, ...]:
    rng = random.Random(SEED)
    return (*(c for name in SOURCES for c in _mutated(rng, name)), *_structural_cases(rng))


# -- the tests ------------------------------------------------------------------------------

def _assert_answer(case: Case, status: int, body: Any, seconds: float) -> None:
    """In time, and either accepted or refused with Orthanc's error object and a reason."""
    assert seconds < ANSWER_WITHIN, f"{case.name}: answered in {seconds:.1f} s"
    if status == 200 and case.refusal is None:
        return
    assert status == 400, f"{case.name}: HTTP {status} {body}"
    assert body["HttpStatus"] == 400 and body["OrthancError"] == "Bad file format", case.name
    assert body["Details"], case.name
    assert case.refusal is None or re.search(case.refusal, body["Details"]), (case.name, body)


def _assert_stored_as_sent(http: Any, accepted: dict[str, bytes]) -> None:
    """Accepted files come back byte for byte, and their tags can be shown."""
    for public_id, data in accepted.items():
        assert http.get(f"/instances/{public_id}/file").content == data, public_id
        assert http.get(f"/instances/{public_id}/tags").status_code == 200, public_id
    assert http.get("/system").status_code == 200
    assert http.get("/statistics").json()["CountInstances"] == len(accepted)


def _post(http: Any, case: Case, accepted: dict[str, bytes]) -> None:
    started = time.monotonic()
    response = http.post("/instances", content=case.data)
    _assert_answer(case, response.status_code, response.json(), time.monotonic() - started)
    if response.status_code == 200 and response.json()["Status"] == "Success":
        accepted[response.json()["ID"]] = case.data


def test_corpus_over_rest_is_refused_cleanly_or_stored_as_sent(
        lanthorn_server: Server, lanthorn_client: Any) -> None:
    accepted: dict[str, bytes] = {}
    for case in corpus():
        _post(lanthorn_client, case, accepted)
    refused = len(corpus()) - len(accepted)
    assert len(corpus()) >= 90 and len(accepted) >= 10 and refused >= 50  # both paths taken
    _assert_stored_as_sent(lanthorn_client, accepted)
    report = check(lanthorn_server, repair=False)
    assert report.consistent, report.summary()


@pytest.mark.parametrize("case", [c for c in corpus() if c.refusal],
                         ids=lambda c: c.name)
def test_truncation_and_nesting_are_refused_whatever_the_warning_filters(case: Case) -> None:
    """pydicom only warns about a sequence that never ends: refusal must not depend on it."""
    for action in ("ignore", "error"):
        with warnings.catch_warnings():
            warnings.simplefilter(action)  # type: ignore[call-overload]
            with pytest.raises(BadFileFormat, match=case.refusal):
                parse_instance(case.data)


def _store_over_dicom(store_scu: StoreScu, port: int, path: Path, case: Case) -> int:
    """The C-STORE status for the file; asserts the answer's timing and Error Comment."""
    meta, _ = split_file_meta(case.data)
    association = store_scu(port, (meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID))
    path.write_bytes(case.data)
    started = time.monotonic()
    answer = association.send_c_store(path)
    assert time.monotonic() - started < ANSWER_WITHIN, case.name
    association.release()
    status = answer.get("Status")
    assert status in (0x0000, 0xC000), f"{case.name}: status {status}"
    assert status == 0x0000 or answer.get("ErrorComment"), case.name
    return status


def _c_store_sample() -> list[Case]:
    """Every seventh file whose file meta is intact (C-STORE sends the data set only)."""
    def intact(case: Case) -> bool:
        try:
            meta, offset = split_file_meta(case.data)
        except Exception:  # any failure means: not sendable
            return False
        return offset < len(case.data) and "TransferSyntaxUID" in meta
    return [c for c in corpus() if intact(c)][::7]


@pytest.mark.slow
def test_sample_against_a_real_server_over_rest_and_c_store(
        lanthorn_process: ServerProcess, store_scu: StoreScu, tmp_path: Path) -> None:
    server = lanthorn_process.start()
    accepted: dict[str, bytes] = {}
    with httpx2.Client(base_url=server.url, timeout=ANSWER_WITHIN) as http:
        for case in corpus()[::7]:
            _post(http, case, accepted)
        for case in _c_store_sample():
            before = set(http.get("/instances").json())
            if _store_over_dicom(store_scu, server.dicom_port, tmp_path / "case.dcm",
                                 case) == 0x0000:
                new = set(http.get("/instances").json()) - before
                stored = {i: http.get(f"/instances/{i}/file").content for i in new}
                assert all(data[split_file_meta(data)[1]:] ==
                           case.data[split_file_meta(case.data)[1]:]
                           for data in stored.values()), case.name
                accepted |= stored
        _assert_stored_as_sent(http, accepted)
    assert server.stop() == 0
    report = server.cli("check")
    assert report.returncode == 0, report.stdout + report.stderr
