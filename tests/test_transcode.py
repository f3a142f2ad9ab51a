"""Transcoding: every pair of the syntaxes Lanthorn writes, on images made with numpy
(MONOCHROME1/2, RGB, 8/16 bits, signed, multi-frame) and on pydicom's compressed files;
then the callers: archives and media with ``Transcode``, and ``IngestTranscoding``."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from lanthorn.config import Config, ConfigError
from lanthorn.errors import BadFileFormat, BadRequest, NotDecodable
from lanthorn.pixels import decode_all
from lanthorn.server import Server
from lanthorn.testing import make_image
from lanthorn.transcode import UNCOMPRESSED, WRITABLE, transcode

ROWS, COLUMNS = 48, 64  # OpenJPEG needs 32 pixels a side for its default resolutions
_Y, _X = np.mgrid[0:ROWS, 0:COLUMNS]
#: Smooth images (lossy codecs keep them close), each in a different pixel format.
IMAGES = {
    "mono2-12bit": (((_Y * 64 + _X * 3) % 4096).astype(np.uint16), "MONOCHROME2", 12),
    "mono1-8bit": ((_X * 4 + _Y).astype(np.uint8), "MONOCHROME1", None),
    "signed-16bit": ((_X * 40 - _Y * 50 - 700).astype(np.int16), "MONOCHROME2", None),
    "rgb-8bit": (np.stack([_X * 4, _Y * 5, 255 - _X * 2], axis=-1).astype(np.uint8), "RGB",
                 None),
    "multiframe-16bit": (np.stack([(_X + _Y) * (f + 1) * 10 for f in range(3)])
                         .astype(np.uint16), "MONOCHROME2", None),
    "multiframe-rgb": (np.stack([np.stack([_X * 4, _Y * 5 + f, _X + _Y], axis=-1)
                                 for f in range(2)]).astype(np.uint8), "RGB", None),
}
#: Largest difference a lossy syntax may make on these images (at quality 90).
TOLERANCE = {JPEGBaseline8Bit: 16, JPEGLSNearLossless: 1, JPEG2000: 0.02}
#: pydicom's files in syntaxes Lanthorn reads but may not write (or in odd formats):
#: JPEG lossless, YBR JPEG, RLE, JPEG-LS, JPEG 2000, big endian 1-bit,
#: deflated, uncompressed YBR 4:2:2, palette colour.
PYDICOM_FILES = ["SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_jpeg_gdcm.dcm",
                 "JPEG2000.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm",
                 "JPEGLSNearLossless_16.dcm", "liver_expb_1frame.dcm", "image_dfl.dcm",
                 "MR_small_bigendian.dcm", "SC_rgb_rle_2frame.dcm", "examples_ybr_color.dcm",
                 "SC_ybr_full_422_uncompressed.dcm", "examples_palette.dcm"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("transcode")
    built = Server(Config.defaults().with_overrides(StorageDirectory=str(folder)),
                   load_entry_points=False)
    yield built
    built.close()


def pixels_of(server: Server, data: bytes) -> np.ndarray:
    return decode_all(server, pydicom.dcmread(io.BytesIO(data)))


def syntax_of(data: bytes) -> UID:
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID


def writable(pixels: np.ndarray, syntax: UID) -> bool:
    """JPEG baseline holds 8-bit samples only; the rest of the table takes every image."""
    return syntax != JPEGBaseline8Bit or pixels.dtype == np.uint8


def assert_close(got: np.ndarray, expected: np.ndarray, syntaxes: list[UID], what: str) -> None:
    assert got.shape == expected.shape, what
    difference = np.abs(got.astype(np.float64) - expected.astype(np.float64)).max()
    lossy = [TOLERANCE[s] for s in syntaxes if s in TOLERANCE]
    span = float(expected.max()) - float(expected.min())
    allowed = sum(t * span if t < 1 else t for t in lossy)
    assert difference <= allowed, f"{what}: pixels differ by {difference} (allowed {allowed})"


@pytest.mark.parametrize("name", IMAGES)
@pytest.mark.parametrize("source", WRITABLE, ids=lambda s: s.name)
def test_every_pair_of_written_syntaxes_keeps_the_pixels(server: Server, name: str,
                                                         source: UID) -> None:
    pixels, photometric, bits = IMAGES[name]
    original = make_image(pixels, photometric=photometric, bits_stored=bits)
    if not writable(pixels, source):
        with pytest.raises(NotDecodable, match="cannot transcode"):
            transcode(server, original, [source])
        return
    first = transcode(server, original, [source])
    assert syntax_of(first) == source
    several_frames = pixels.ndim == (4 if photometric == "RGB" else 3)
    assert_close(pixels_of(server, first), pixels if several_frames else pixels[np.newaxis],
                 [source], f"{name} → {source.name}")
    for target in WRITABLE:
        if not writable(pixels, target):
            continue
        second = transcode(server, first, [target])
        assert syntax_of(second) == target
        dataset = pydicom.dcmread(io.BytesIO(second))
        assert dataset.SOPInstanceUID == pydicom.dcmread(io.BytesIO(original)).SOPInstanceUID
        assert dataset.PhotometricInterpretation in \
            (photometric, "YBR_FULL_422" if target == JPEGBaseline8Bit else photometric)
        assert_close(pixels_of(server, second), pixels_of(server, first), [target],
                     f"{name}: {source.name} → {target.name}")


@pytest.mark.parametrize("name", PYDICOM_FILES)
def test_pydicom_files_decode_and_transcode_to_every_uncompressed_syntax(
        server: Server, name: str) -> None:
    data = Path(get_testdata_file(name)).read_bytes()
    expected = pixels_of(server, data)
    reference = pydicom.dcmread(io.BytesIO(data)).pixel_array  # pydicom's own decoding
    assert np.array_equal(expected.reshape(reference.shape), reference)
    for target in UNCOMPRESSED:
        converted = transcode(server, data, [target])
        assert syntax_of(converted) in (target, syntax_of(data))
        assert np.array_equal(pixels_of(server, converted), expected), f"{name} → {target}"


def test_already_acceptable_is_returned_unchanged(server: Server) -> None:
    data = make_image(IMAGES["mono1-8bit"][0], photometric="MONOCHROME1")
    assert transcode(server, data, [RLELossless, ExplicitVRLittleEndian]) is data
    # The first syntax that can be written wins; one that cannot is skipped.
    wide = make_image(IMAGES["signed-16bit"][0])
    assert syntax_of(transcode(server, wide, [JPEGBaseline8Bit, JPEGLSLossless])) == \
        JPEGLSLossless


def test_a_dataset_given_is_left_unchanged(server: Server) -> None:
    data = make_image(IMAGES["rgb-8bit"][0], photometric="RGB")
    dataset = pydicom.dcmread(io.BytesIO(data))
    before = {element.tag: element.value for element in dataset}
    converted = transcode(server, dataset, [JPEGBaseline8Bit])
    assert syntax_of(converted) == JPEGBaseline8Bit
    assert {element.tag: element.value for element in dataset} == before
    assert dataset.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_instances_without_pixels_change_syntax_only_uncompressed(server: Server) -> None:
    report = Path(get_testdata_file("test-SR.dcm")).read_bytes()
    converted = transcode(server, report, [ExplicitVRLittleEndian])
    assert syntax_of(converted) == ExplicitVRLittleEndian
    assert pydicom.dcmread(io.BytesIO(converted)).ContentSequence == \
        pydicom.dcmread(io.BytesIO(report)).ContentSequence
    with pytest.raises(NotDecodable):
        transcode(server, report, [RLELossless])


def test_bad_requests(server: Server) -> None:
    data = make_image(IMAGES["mono1-8bit"][0])
    with pytest.raises(BadRequest, match="not a transfer syntax"):
        transcode(server, data, ["1.2.3.4"])
    with pytest.raises(BadFileFormat):
        transcode(server, b"not DICOM at all", [ExplicitVRLittleEndian])


# -- archives and media ----------------------------------------------------------------

def _zip(response: Any) -> dict[str, bytes]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def _study(client: Any) -> tuple[str, dict[str, bytes]]:
    """A study with a 16-bit image, an RGB image and a structured report."""
    study = pydicom.uid.generate_uid()
    files = {
        "gray": make_image(IMAGES["mono2-12bit"][0], bits_stored=12, StudyInstanceUID=study),
        "rgb": make_image(IMAGES["rgb-8bit"][0], photometric="RGB", StudyInstanceUID=study),
    }
    report = pydicom.dcmread(get_testdata_file("test-SR.dcm"))
    report.StudyInstanceUID = study
    report.PatientID = "PATIENT"
    buffer = io.BytesIO()
    report.save_as(buffer)
    files["report"] = buffer.getvalue()
    for data in files.values():
        assert client.post("/instances", content=data).status_code == 200
    return client.post("/instances", content=files["gray"]).json()["ParentStudy"], files


def test_archive_transcode_converts_each_member(lanthorn_client: Any) -> None:
    study, files = _study(lanthorn_client)
    for response in (lanthorn_client.get(f"/studies/{study}/archive?transcode={RLELossless}"),
                     lanthorn_client.post(f"/studies/{study}/archive",
                                          json={"Transcode": str(RLELossless)})):
        members = list(_zip(response).values())
        by_uid = {pydicom.dcmread(io.BytesIO(m)).SOPInstanceUID: m for m in members}
        for name in ("gray", "rgb"):
            original = files[name]
            member = by_uid[pydicom.dcmread(io.BytesIO(original)).SOPInstanceUID]
            assert syntax_of(member) == RLELossless
            dataset = pydicom.dcmread(io.BytesIO(member))
            assert np.array_equal(dataset.pixel_array,
                                  pydicom.dcmread(io.BytesIO(original)).pixel_array)
        # A report has no pixels to compress: it is sent as stored, as Orthanc does.
        report_uid = pydicom.dcmread(io.BytesIO(files["report"])).SOPInstanceUID
        assert by_uid[report_uid] == files["report"]


def test_media_transcode_names_the_written_syntaxes_in_its_dicomdir(
        lanthorn_client: Any, tmp_path: Path) -> None:
    study, files = _study(lanthorn_client)
    members = _zip(lanthorn_client.post(f"/studies/{study}/media",
                                        json={"Transcode": str(JPEGLSLossless)}))
    for name, data in members.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    dicomdir = pydicom.dcmread(tmp_path / "DICOMDIR")
    images = [r for r in dicomdir.DirectoryRecordSequence if r.DirectoryRecordType == "IMAGE"]
    assert len(images) == 3
    for record in images:
        path = tmp_path.joinpath(*record.ReferencedFileID)
        stored = syntax_of(path.read_bytes())
        assert record.ReferencedTransferSyntaxUIDInFile == stored
        is_report = record.ReferencedSOPInstanceUIDInFile == \
            pydicom.dcmread(io.BytesIO(files["report"])).SOPInstanceUID
        assert stored == (syntax_of(files["report"]) if is_report else JPEGLSLossless)


def test_asynchronous_archive_transcodes_in_its_job(lanthorn_client: Any) -> None:
    study, files = _study(lanthorn_client)
    job = lanthorn_client.post(f"/studies/{study}/archive", json={
        "Transcode": str(JPEGLSLossless), "Asynchronous": True}).json()["ID"]
    deadline = time.monotonic() + 30
    while (state := lanthorn_client.get(f"/jobs/{job}").json())["State"] not in \
            ("Success", "Failure") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state["State"] == "Success" and state["Content"]["InstancesCount"] == 3
    output = lanthorn_client.get(f"/jobs/{job}/archive")
    assert int(state["Content"]["ArchiveSize"]) == len(output.content)
    syntaxes = sorted(syntax_of(member) for member in _zip(output).values())
    assert syntaxes == sorted([JPEGLSLossless, JPEGLSLossless, syntax_of(files["report"])])


@pytest.mark.parametrize("request_body", [{"Transcode": "1.2.3"}, {"Transcode": 12}])
def test_archive_transcode_to_an_unknown_syntax_is_refused(lanthorn_client: Any,
                                                           request_body: dict) -> None:
    study, _ = _study(lanthorn_client)
    response = lanthorn_client.post(f"/studies/{study}/archive", json=request_body)
    assert response.status_code == 400
    assert "transfer syntax" in response.json()["Details"]


# -- IngestTranscoding -----------------------------------------------------------------

def _stored(client: Any, data: bytes) -> tuple[bytes, dict[str, Any]]:
    answer = client.post("/instances", content=data)
    assert answer.status_code == 200, answer.text
    instance = answer.json()["ID"]
    metadata = client.get(f"/instances/{instance}/metadata?expand").json()
    return client.get(f"/instances/{instance}/file").content, metadata


@pytest.mark.lanthorn_config(IngestTranscoding=str(JPEGLSLossless))
def test_ingest_transcoding_stores_the_configured_syntax(lanthorn_client: Any) -> None:
    pixels = IMAGES["signed-16bit"][0]
    stored, metadata = _stored(lanthorn_client, make_image(pixels))
    assert syntax_of(stored) == JPEGLSLossless
    assert metadata["TransferSyntax"] == JPEGLSLossless
    assert np.array_equal(pydicom.dcmread(io.BytesIO(stored)).pixel_array, pixels)
    compressed = Path(get_testdata_file("MR_small_RLE.dcm")).read_bytes()
    assert syntax_of(_stored(lanthorn_client, compressed)[0]) == JPEGLSLossless
    # What cannot be converted is stored as received.
    report = Path(get_testdata_file("test-SR.dcm")).read_bytes()
    assert _stored(lanthorn_client, report)[0] == report


@pytest.mark.lanthorn_config(IngestTranscoding=str(ImplicitVRLittleEndian),
                             IngestTranscodingOfCompressed=False)
def test_ingest_transcoding_of_compressed_can_be_switched_off(lanthorn_client: Any) -> None:
    compressed = Path(get_testdata_file("MR_small_RLE.dcm")).read_bytes()
    assert _stored(lanthorn_client, compressed)[0] == compressed
    native = make_image(IMAGES["mono1-8bit"][0])
    assert syntax_of(_stored(lanthorn_client, native)[0]) == ImplicitVRLittleEndian


@pytest.mark.lanthorn_config(IngestTranscoding=str(RLELossless),
                             IngestTranscodingOfUncompressed=False)
def test_ingest_transcoding_of_uncompressed_can_be_switched_off(lanthorn_client: Any) -> None:
    native = make_image(IMAGES["mono1-8bit"][0])
    assert _stored(lanthorn_client, native)[0] == native
    lossless = Path(get_testdata_file("MR_small_jpeg_ls_lossless.dcm")).read_bytes()
    assert syntax_of(_stored(lanthorn_client, lossless)[0]) == RLELossless


@pytest.mark.parametrize("option", ["IngestTranscoding", "DicomScuPreferredTransferSyntax"])
def test_a_mistyped_transfer_syntax_option_stops_start_up(lanthorn_config: Config,
                                                          option: str) -> None:
    server = Server(lanthorn_config.with_overrides(**{option: "1.2.840.10008.1.2.4.5x"}),
                    load_entry_points=False)
    try:
        with pytest.raises(ConfigError, match=option):
            server.start(background=False)
    finally:
        server.close()


def test_transcoding_a_dataset_keeps_its_private_and_nested_elements(server: Server) -> None:
    dataset = pydicom.dcmread(io.BytesIO(make_image(IMAGES["mono1-8bit"][0])))
    block = dataset.private_block(0x0011, "LANTHORN TEST", create=True)
    block.add_new(0x01, "LO", "private value")
    item = Dataset()
    item.CodeValue = "123"
    dataset.ProcedureCodeSequence = [item]
    converted = pydicom.dcmread(io.BytesIO(transcode(server, dataset, [RLELossless])))
    assert converted.private_block(0x0011, "LANTHORN TEST")[0x01].value == "private value"
    assert converted.ProcedureCodeSequence[0].CodeValue == "123"
