"""The DICOMweb plugin against real clients: dicomweb-client over real HTTP to a
``lanthorn serve`` process (which loads the installed plugin through its entry point),
and raw HTTP for the standard's corner cases (status codes, media types, bad input)."""

from __future__ import annotations

import copy
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import jpeg_ls
import lanthorn_dicomweb
import numpy
import openjpeg
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from lanthorn import Server
from lanthorn.config import ConfigError
from lanthorn.testing import ServerProcess, free_port, make_image, make_instance

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
CT = Path(get_testdata_file("CT_small.dcm")).read_bytes()
RLE_2_FRAMES = Path(get_testdata_file("SC_rgb_rle_2frame.dcm")).read_bytes()
CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
CT_SERIES = "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"
CT_SOP = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
JSON_VRS = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "OB",
            "OD", "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM",
            "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV"}


def _with_host(process: ServerProcess) -> ServerProcess:
    """Set ``DicomWeb.Host``: dicomweb-client sends a Host header without the port, so
    URLs built from it would miss the port (the README says so)."""
    config = json.loads(process.config_path.read_text())
    config.setdefault("DicomWeb", {}).setdefault("Host", f"127.0.0.1:{process.http_port}")
    process.config_path.write_text(json.dumps(config))
    return process


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the tests of this module that do not configure their own: starting
    a process costs seconds, emptying it a few requests."""
    folder = tmp_path_factory.mktemp("dicomweb")
    process = ServerProcess(folder / "lanthorn.json", free_port(), free_port(),
                            folder / "server.log")
    process.config_path.write_text(json.dumps({
        "StorageDirectory": str(folder / "storage"), "HttpPort": process.http_port,
        "DicomPort": process.dicom_port, "StableAge": 1, "HttpBindAddress": "127.0.0.1",
        "DicomBindAddress": "127.0.0.1"}))
    try:
        yield _with_host(process).start()
    finally:
        process.kill_group()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> ServerProcess:
    """A server with nothing stored: the shared one, emptied; a test marked
    ``lanthorn_config`` gets a process of its own, on that configuration."""
    if request.node.get_closest_marker("lanthorn_config"):
        return _with_host(request.getfixturevalue("lanthorn_process")).start()
    server: ServerProcess = request.getfixturevalue("shared_server")
    with httpx2.Client(base_url=server.url, timeout=60) as http:
        for patient in http.get("/patients").json():
            assert http.delete(f"/patients/{patient}").status_code == 200
        assert http.get("/statistics").json()["CountInstances"] == 0
    return server


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture
def client(server: ServerProcess) -> DICOMwebClient:
    return DICOMwebClient(url=f"{server.url}/dicom-web")


def _dataset(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def _series(count: int, **tags: Any) -> list[bytes]:
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    return [make_instance(StudyInstanceUID=study, SeriesInstanceUID=series,
                          InstanceNumber=n + 1, seed=n, **tags) for n in range(count)]


def check_json_model(item: dict[str, Any]) -> None:
    """PS3.18 Annex F: 8-digit upper-case tags, a valid VR, one of Value / BulkDataURI /
    InlineBinary, PN as objects of component groups, sequences of datasets."""
    for key, element in item.items():
        assert len(key) == 8 and key == key.upper() and int(key, 16) >= 0, key
        assert element["vr"] in JSON_VRS, (key, element)
        assert len({"Value", "BulkDataURI", "InlineBinary"} & set(element)) <= 1, element
        if element["vr"] == "PN" and "Value" in element:
            for name in element["Value"]:
                assert name is None or set(name) <= {"Alphabetic", "Ideographic", "Phonetic"}
        if element["vr"] == "SQ":
            for child in element.get("Value", []):
                check_json_model(child)
        if "BulkDataURI" in element:
            assert element["vr"] in {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}


# -- QIDO-RS ----------------------------------------------------------------------------


def test_search_at_every_level_with_dicomweb_client(client: DICOMwebClient) -> None:
    client.store_instances([_dataset(CT)])
    studies = client.search_for_studies(search_filters={"PatientName": "CompressedSamples*"})
    assert [s["0020000D"]["Value"] for s in studies] == [[CT_STUDY]]
    study = studies[0]
    check_json_model(study)
    assert study["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "CompressedSamples^CT1"}]}
    assert study["00201208"] == {"vr": "IS", "Value": [1]}
    assert study["00080061"]["Value"] == ["CT"]
    assert study["00081190"]["Value"][0].endswith(f"/dicom-web/studies/{CT_STUDY}")
    assert client.search_for_series(CT_STUDY)[0]["0020000E"]["Value"] == [CT_SERIES]
    assert client.search_for_instances(CT_STUDY, CT_SERIES)[0]["00080018"]["Value"] == [CT_SOP]
    assert client.search_for_instances(CT_STUDY)[0]["00280010"] == {"vr": "US", "Value": [128]}
    assert client.search_for_series(search_filters={"Modality": "MR"}) == []


def test_matching_goes_through_the_query_engine(client: DICOMwebClient,
                                                http: httpx2.Client) -> None:
    for name, date in (("DOE^JOHN", "20200101"), ("DOE^JANE", "20210601"),
                       ("ROE^RICHARD", "20220301")):
        client.store_instances([_dataset(make_instance(PatientName=name, PatientID=name,
                                                       StudyDate=date))])

    def names(**filters: str) -> list[str]:
        found = http.get("/dicom-web/studies", params=filters).json()
        return sorted(s["00100010"]["Value"][0]["Alphabetic"] for s in found)

    assert names(PatientName="DOE*") == ["DOE^JANE", "DOE^JOHN"]
    assert names(StudyDate="20201231-20211231") == ["DOE^JANE"]
    assert names(PatientName="doe^j?ne") == []
    assert names(PatientName="doe^j?ne", fuzzymatching="true") == ["DOE^JANE"]
    assert names(**{"00100010": "ROE^RICHARD"}) == ["ROE^RICHARD"]
    assert len(names(limit="2")) == 2
    assert len(names(limit="2", offset="2")) == 1


def test_includefield(client: DICOMwebClient, http: httpx2.Client) -> None:
    client.store_instances([_dataset(CT)])
    plain = http.get("/dicom-web/studies").json()[0]
    assert "00081030" not in plain  # StudyDescription is not a default field
    named = http.get("/dicom-web/studies", params={"includefield": "StudyDescription"}).json()
    assert named[0]["00081030"] == {"vr": "LO", "Value": ["e+1"]}
    by_tag = http.get("/dicom-web/instances", params={"includefield": "00181150"}).json()
    assert by_tag[0]["00181150"] == {"vr": "IS", "Value": [1601]}
    everything = http.get("/dicom-web/instances", params={"includefield": "all"}).json()[0]
    check_json_model(everything)
    assert everything["00101002"]["vr"] == "SQ"  # the whole header, sequences included
    assert len(everything) > 200


@pytest.mark.parametrize("query, message", [
    ("limit=ten", '"limit" must be a non-negative integer'),
    ("offset=-1", '"offset" must be a non-negative integer'),
    ("fuzzymatching=maybe", '"fuzzymatching" must be true or false'),
    ("NoSuchAttribute=1", 'unknown query parameter or attribute "NoSuchAttribute"'),
    ("includefield=Nope", 'unknown includefield parameter or attribute "Nope"'),
    ("StudyInstanceUID=1.2*", "wildcards are not allowed in a UID"),
    ("PatientName=A&00100010=B", "given twice"),
    ("00081250.0020000D=1.2", "sequence attributes"),
])
def test_bad_queries_are_400_with_a_message(http: httpx2.Client, query: str,
                                            message: str) -> None:
    response = http.get(f"/dicom-web/studies?{query}")
    assert response.status_code == 400
    assert message in response.json()["Details"]


def test_qido_refuses_xml(http: httpx2.Client) -> None:
    response = http.get("/dicom-web/studies", headers={"Accept": "application/dicom+xml"})
    assert response.status_code == 406


# -- WADO-RS ----------------------------------------------------------------------------


def test_retrieve_study_series_and_instance(client: DICOMwebClient) -> None:
    files = _series(3)
    client.store_instances([_dataset(f) for f in files])
    first = _dataset(files[0])
    study, series = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    retrieved = client.retrieve_study(study)
    assert sorted(str(d.SOPInstanceUID) for d in retrieved) == \
        sorted(str(_dataset(f).SOPInstanceUID) for f in files)
    assert {d.PixelData for d in client.retrieve_series(study, series)} == \
        {_dataset(f).PixelData for f in files}
    one = client.retrieve_instance(study, series, str(first.SOPInstanceUID))
    assert one.PixelData == first.PixelData and one.PatientName == first.PatientName


def test_retrieve_streams_the_stored_bytes(client: DICOMwebClient, http: httpx2.Client) -> None:
    client.store_instances([_dataset(CT)])
    response = http.get(f"/dicom-web/studies/{CT_STUDY}",
                        headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1')
    assert CT in response.content  # byte for byte as received


def test_retrieve_transcodes_to_the_syntax_asked_for(client: DICOMwebClient,
                                                     http: httpx2.Client) -> None:
    client.store_instances([_dataset(CT)])
    j2k = "1.2.840.10008.1.2.4.90"
    (instance,) = client.retrieve_study(CT_STUDY, media_types=((DICOM, j2k),))
    assert instance.file_meta.TransferSyntaxUID == j2k
    assert (instance.pixel_array == _dataset(CT).pixel_array).all()  # lossless
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={j2k}'
    answer = http.get(f"/dicom-web/studies/{CT_STUDY}", headers={"Accept": accept})
    assert f"transfer-syntax={j2k}" in answer.headers["content-type"]
    stored = accept.replace(j2k, "1.2.840.10008.1.2.1")
    assert CT in http.get(f"/dicom-web/studies/{CT_STUDY}", headers={"Accept": stored}).content
    mpeg2 = accept.replace(j2k, "1.2.840.10008.1.2.4.100")
    refused = http.get(f"/dicom-web/studies/{CT_STUDY}", headers={"Accept": mpeg2})
    assert refused.status_code == 406
    assert "cannot transcode to 1.2.840.10008.1.2.4.100" in refused.json()["Details"]


def test_metadata_from_the_saved_headers(client: DICOMwebClient, server: ServerProcess,
                                         http: httpx2.Client) -> None:
    files = _series(4)
    client.store_instances([_dataset(f) for f in files])
    first = _dataset(files[0])
    study, series = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    # The files are gone: metadata must not need them.
    storage = Path(json.loads(server.config_path.read_text())["StorageDirectory"])
    emptied = 0
    for instance in http.get("/instances").json():
        for name in http.get(f"/instances/{instance}/attachments").json():
            uuid = http.get(f"/instances/{instance}/attachments/{name}/info").json()["Uuid"]
            for path in storage.rglob(uuid):
                path.write_bytes(b"")
                emptied += 1
    assert emptied >= 4
    metadata = client.retrieve_series_metadata(study, series)
    assert len(metadata) == 4
    for item in metadata:
        check_json_model(item)
        assert item["7FE00010"]["BulkDataURI"].endswith("/bulk/7fe00010")
        assert item["7FE00010"]["vr"] == "OW"
    assert {m["00200013"]["Value"][0] for m in metadata} == {1, 2, 3, 4}
    assert len(client.retrieve_study_metadata(study)) == 4
    instance = client.retrieve_instance_metadata(study, series, str(first.SOPInstanceUID))
    assert instance["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "TEST^PATIENT"}]}
    assert http.get(f"/dicom-web/studies/{study}/metadata").headers["content-type"] == \
        "application/dicom+json"


def test_kept_metadata_is_the_rendered_one_under_any_host(
        lanthorn_process: ServerProcess) -> None:
    """Without DicomWeb.Host, URLs follow the Host header, cached JSON included."""
    http = httpx2.Client(base_url=lanthorn_process.start().url, timeout=60)
    http.post("/instances", content=CT)
    path = f"/dicom-web/studies/{CT_STUDY}/metadata"
    rendered = http.get(path, headers={"Host": "one.example"}).text  # rendered, then kept
    kept = http.get(path, headers={"Host": "two.example:8080"}).text
    assert kept == rendered.replace("http://one.example/", "http://two.example:8080/")
    assert "two.example:8080/dicom-web/studies" in kept
    http.delete(f"/studies/{http.get('/studies').json()[0]}")
    assert http.get(path).status_code == 404
    http.post("/instances", content=CT)  # the kept JSON went with the instance
    assert http.get(path, headers={"Host": "one.example"}).text == rendered
    http.close()


@pytest.mark.lanthorn_config(DicomWeb={"EnableMetadataCache": False})
def test_metadata_without_the_cache(client: DICOMwebClient) -> None:
    client.store_instances([_dataset(CT)])
    for _ in range(2):
        assert client.retrieve_study_metadata(CT_STUDY)[0]["00100020"]["Value"] == ["1CT1"]


def test_metadata_of_a_large_series_streams_in_blocks(client: DICOMwebClient) -> None:
    """More than one 64 KB block of JSON: the blocks join into one valid array."""
    ct = _dataset(CT)
    series = pydicom.uid.generate_uid()
    copies = []
    for number in range(12):
        ct.SeriesInstanceUID, ct.SOPInstanceUID = series, pydicom.uid.generate_uid()
        ct.InstanceNumber = number + 1
        copies.append(copy.deepcopy(ct))
    client.store_instances(copies)
    metadata = client.retrieve_series_metadata(CT_STUDY, series)
    assert sorted(m["00200013"]["Value"][0] for m in metadata) == list(range(1, 13))
    assert len(json.dumps(metadata)) > 2 * (1 << 16)


def test_bulk_data_with_ranges(client: DICOMwebClient) -> None:
    client.store_instances([_dataset(CT)])
    metadata = client.retrieve_instance_metadata(CT_STUDY, CT_SERIES, CT_SOP)
    pixels = _dataset(CT).PixelData
    assert client.retrieve_bulkdata(metadata["7FE00010"]["BulkDataURI"]) == [pixels]
    ranged = client.retrieve_bulkdata(metadata["7FE00010"]["BulkDataURI"], byte_range=(10, 19))
    assert ranged == [pixels[10:20]]


def test_bulk_data_of_an_element_and_unknown_paths(client: DICOMwebClient,
                                                   http: httpx2.Client) -> None:
    data = make_instance(RedPaletteColorLookupTableData=bytes(range(256)) * 8)
    client.store_instances([_dataset(data)])
    dataset = _dataset(data)
    uids = (dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID)
    metadata = client.retrieve_instance_metadata(*uids)
    uri = metadata["00281201"]["BulkDataURI"]
    assert client.retrieve_bulkdata(uri) == [bytes(range(256)) * 8]
    base = "/dicom-web/studies/{}/series/{}/instances/{}".format(*uids)
    assert http.get(f"{base}/bulk/00281202").status_code == 404
    assert http.get(f"{base}/bulk/00100010").status_code == 404  # text, not bulk data
    assert http.get(f"{base}/bulk/7fe00010", headers={"Range": "bytes=999999-"}).status_code \
        == 416


def test_native_frames(client: DICOMwebClient, http: httpx2.Client) -> None:
    frames = [bytes([n]) * 128 for n in range(3)]
    data = make_instance(NumberOfFrames=3)
    dataset = _dataset(data)
    dataset.PixelData = b"".join(frames)
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    client.store_instances([_dataset(buffer.getvalue())])
    uids = (dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID)
    assert client.retrieve_instance_frames(*uids, frame_numbers=[2]) == [frames[1]]
    assert client.retrieve_instance_frames(*uids, frame_numbers=[3, 1]) == [frames[2], frames[0]]
    base = "/dicom-web/studies/{}/series/{}/instances/{}".format(*uids)
    assert http.get(f"{base}/frames/4").status_code == 404
    assert http.get(f"{base}/frames/0").status_code == 400
    for accept in ('multipart/related; type="application/octet-stream"; '
                   "transfer-syntax=1.2.840.10008.1.2.4.90",  # a JPEG 2000 syntax
                   'multipart/related; type="image/jpeg"',  # baseline: 8 bits only
                   'multipart/related; type="image/jls"; transfer-syntax=1.2.3'):
        other = http.get(f"{base}/frames/1", headers={"Accept": accept})
        assert other.status_code == 406, accept
        assert other.json()["Details"].startswith("the frames ")


@pytest.mark.parametrize(("media_type", "syntax", "decode"), [
    ("image/jls", "1.2.840.10008.1.2.4.80",
     lambda data: jpeg_ls.decode(numpy.frombuffer(data, numpy.uint8))),
    ("image/jp2", "1.2.840.10008.1.2.4.90", lambda data: openjpeg.decode(data)),
    ("image/dicom-rle", "1.2.840.10008.1.2.5", None),
])
def test_native_frames_transcoded_to_compressed_ones(client: DICOMwebClient,
                                                     http: httpx2.Client, media_type: str,
                                                     syntax: str, decode: Any) -> None:
    """Lossless media types: the frames decode to the stored pixels."""
    pixels = numpy.random.default_rng(7).integers(0, 4096, (2, 64, 48), dtype=numpy.uint16)
    dataset = _dataset(make_image(pixels, bits_stored=12))
    client.store_instances([dataset])
    uids = (dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID)
    base = "/dicom-web/studies/{}/series/{}/instances/{}".format(*uids)
    response = http.get(f"{base}/frames/2",
                        headers={"Accept": f'multipart/related; type="{media_type}"'})
    assert response.status_code == 200, response.text
    assert f"transfer-syntax={syntax}" in response.headers["content-type"]
    (frame,) = _parts(response)
    if decode is None:  # RLE: through pydicom, as a one-frame dataset
        single = copy.deepcopy(dataset)
        single.NumberOfFrames = 1
        single.file_meta.TransferSyntaxUID = syntax
        single.PixelData = pydicom.encaps.encapsulate([frame])
        decoded = single.pixel_array
    else:
        decoded = decode(frame)
    assert numpy.array_equal(decoded.reshape(pixels[1].shape), pixels[1])


def test_compressed_frames_are_the_stored_fragments(client: DICOMwebClient,
                                                    http: httpx2.Client) -> None:
    client.store_instances([_dataset(RLE_2_FRAMES)])
    dataset = _dataset(RLE_2_FRAMES)
    uids = (dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID)
    expected = list(pydicom.encaps.generate_frames(dataset.PixelData, number_of_frames=2))
    got = client.retrieve_instance_frames(*uids, frame_numbers=[1, 2],
                                          media_types=("image/dicom-rle",))
    assert got == expected
    base = "/dicom-web/studies/{}/series/{}/instances/{}".format(*uids)
    for accept in ('multipart/related; type="application/octet-stream"; '
                   "transfer-syntax=1.2.840.10008.1.2.1",
                   'multipart/related; type="application/octet-stream"'):
        native = http.get(f"{base}/frames/2,1", headers={"Accept": accept})
        assert native.status_code == 200, native.text
        assert "transfer-syntax=1.2.840.10008.1.2.1" in native.headers["content-type"]
        assert _parts(native) == [dataset.pixel_array[1].tobytes(),
                                  dataset.pixel_array[0].tobytes()]


def test_unknown_uids_are_404(client: DICOMwebClient, http: httpx2.Client) -> None:
    client.store_instances([_dataset(CT)])
    response = http.get("/dicom-web/studies/1.2.3/metadata")
    assert response.status_code == 404
    assert "StudyInstanceUID 1.2.3" in response.json()["Details"]
    known = f"/dicom-web/studies/{CT_STUDY}/series/{CT_SERIES}"
    for path in ("/dicom-web/studies/1.2.3", "/dicom-web/studies/1.2.3/rendered",
                 "/dicom-web/studies/1.2.3/thumbnail", f"/dicom-web/studies/{CT_STUDY}/series/9",
                 f"/dicom-web/studies/{CT_STUDY}/series/9/metadata",
                 f"/dicom-web/studies/{CT_STUDY}/series/9/rendered", f"{known}/instances/9",
                 f"{known}/instances/9/metadata", f"{known}/instances/9/frames/1",
                 f"{known}/instances/9/bulk/7fe00010", f"{known}/instances/9/rendered",
                 f"{known}/instances/{CT_SOP}/bulk/00091234"):
        response = http.get(path)
        assert response.status_code == 404, path
        assert response.json()["Details"], path
    assert http.get(f"{known}/instances/{CT_SOP}").status_code == 200


# -- STOW-RS ----------------------------------------------------------------------------


def _parts(response: httpx2.Response) -> list[bytes]:
    """The bodies of a multipart answer's parts."""
    boundary = re.search(r"boundary=([^;]+)", response.headers["content-type"])
    assert boundary is not None
    chunks = response.content.split(b"--" + boundary.group(1).encode())[1:-1]
    return [chunk.split(b"\r\n\r\n", 1)[1][:-2] for chunk in chunks]


def _multipart(parts: list[tuple[str, bytes]], boundary: str = "b0undary",
               locations: tuple[str, ...] = ()) -> bytes:
    """A multipart body; the last parts get the Content-Locations ``locations``."""
    named = [""] * (len(parts) - len(locations)) + [f"Content-Location: {u}\r\n"
                                                    for u in locations]
    body = b"".join(f"--{boundary}\r\nContent-Type: {kind}\r\n{where}\r\n".encode() + data
                    + b"\r\n" for (kind, data), where in zip(parts, named, strict=True))
    return body + f"--{boundary}--\r\n".encode()


STOW_TYPE = 'multipart/related; type="application/dicom"; boundary=b0undary'


def test_store_with_dicomweb_client(client: DICOMwebClient, http: httpx2.Client) -> None:
    files = _series(3)
    answer = client.store_instances([_dataset(f) for f in files])
    assert [str(i.ReferencedSOPInstanceUID) for i in answer.ReferencedSOPSequence] == \
        [str(_dataset(f).SOPInstanceUID) for f in files]
    assert answer.ReferencedSOPSequence[0].RetrieveURL.startswith("http://127.0.0.1")
    assert "FailedSOPSequence" not in answer or not answer.FailedSOPSequence
    assert http.get("/statistics").json()["CountInstances"] == 3


def test_store_keeps_the_good_parts_and_reports_the_bad(http: httpx2.Client) -> None:
    good = make_instance()
    body = _multipart([("application/dicom", good), ("application/dicom", b"not DICOM"),
                       ("text/plain", make_instance())])
    response = http.post("/dicom-web/studies", content=body,
                         headers={"Content-Type": STOW_TYPE})
    assert response.status_code == 202
    answer = Dataset.from_json(response.json())
    assert [i.ReferencedSOPInstanceUID for i in answer.ReferencedSOPSequence] == \
        [_dataset(good).SOPInstanceUID]
    assert [i.FailureReason for i in answer.FailedSOPSequence] == [0xC000, 0xC000]
    assert http.get("/statistics").json()["CountInstances"] == 1


def test_store_into_a_study_refuses_other_studies(http: httpx2.Client) -> None:
    instance = make_instance()
    response = http.post("/dicom-web/studies/1.2.3", content=_multipart(
        [("application/dicom", instance)]), headers={"Content-Type": STOW_TYPE})
    assert response.status_code == 409
    failed = Dataset.from_json(response.json()).FailedSOPSequence
    assert failed[0].ReferencedSOPInstanceUID == _dataset(instance).SOPInstanceUID
    assert failed[0].FailureReason == 0x0110
    assert http.get("/statistics").json()["CountInstances"] == 0


STOW_JSON = 'multipart/related; type="application/dicom+json"; boundary=b0undary'


def test_store_dicom_json_with_bulk_data(http: httpx2.Client) -> None:
    """The JSON form: metadata parts, pixel data in parts named by BulkDataURI (native,
    and one JPEG 2000 frame), small values inline; a dataset whose bulk data is missing
    and a part that is not JSON are reported, the others stored."""
    native, compressed = _dataset(make_instance(rows=16, columns=16)), _dataset(RLE_2_FRAMES)
    inline, missing = _dataset(make_instance()), _dataset(make_instance())
    first = compressed.pixel_array[0]
    j2k = copy.deepcopy(compressed)  # the RLE sample's first frame, in JPEG 2000 lossless
    j2k.NumberOfFrames = 1
    j2k.PixelData = first.tobytes()
    j2k.PlanarConfiguration, j2k.PhotometricInterpretation = 0, "RGB"
    j2k.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    j2k.compress("1.2.840.10008.1.2.4.90", generate_instance_uid=False)
    frame = next(pydicom.encaps.generate_frames(j2k.PixelData, number_of_frames=1))
    items = [
        native.to_json_dict(bulk_data_threshold=64,
                            bulk_data_element_handler=lambda e: "http://x/native"),
        _without_pixels(j2k, "http://x/j2k"),
        inline.to_json_dict(bulk_data_threshold=1 << 20),
        missing.to_json_dict(bulk_data_threshold=64,
                             bulk_data_element_handler=lambda e: "http://x/nowhere"),
    ]
    body = _multipart([(DICOM_JSON, json.dumps(items[:2]).encode()),
                       (DICOM_JSON, json.dumps(items[2:]).encode()),
                       (DICOM_JSON, b"{not json"),
                       ("application/octet-stream", native.PixelData),
                       ("image/jp2; transfer-syntax=1.2.840.10008.1.2.4.90", frame)],
                      locations=("http://x/native", "http://x/j2k"))
    response = http.post("/dicom-web/studies", content=body,
                         headers={"Content-Type": STOW_JSON})
    assert response.status_code == 202, response.text
    answer = Dataset.from_json(response.json())
    assert [i.ReferencedSOPInstanceUID for i in answer.ReferencedSOPSequence] == \
        [native.SOPInstanceUID, j2k.SOPInstanceUID, inline.SOPInstanceUID]
    assert [(i.get("ReferencedSOPInstanceUID", ""), i.FailureReason)
            for i in answer.FailedSOPSequence] == [(missing.SOPInstanceUID, 0xC000),
                                                   ("", 0xC000)]
    stored = {d.SOPInstanceUID: d for d in
              (_dataset(http.get(f"/instances/{found['ID']}/file").content)
               for found in http.get("/instances", params={"expand": ""}).json())}
    assert stored[native.SOPInstanceUID].PixelData == native.PixelData
    assert stored[inline.SOPInstanceUID].PixelData == inline.PixelData
    assert stored[j2k.SOPInstanceUID].file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    assert numpy.array_equal(stored[j2k.SOPInstanceUID].pixel_array, first)
    assert len(stored) == 3


def _without_pixels(dataset: Dataset, uri: str) -> dict[str, Any]:
    item = dataset.to_json_dict(bulk_data_threshold=1 << 20)
    item["7FE00010"] = {"vr": "OB", "BulkDataURI": uri}
    return item


@pytest.mark.parametrize("content_type, body, status, message", [
    ("application/dicom", make_instance(), 415, "must be multipart/related"),
    ('multipart/related; type="application/xml+dicom"; boundary=b0undary', b"", 415,
     "only type"),
    ('multipart/related; type="application/dicom"', b"x", 400, "no boundary"),
    ('multipart/related; type="application/dicom"; boundary=other',
     _multipart([("application/dicom", make_instance())]), 400, "malformed multipart"),
    (STOW_TYPE, _multipart([("application/dicom", make_instance())])[:-30], 400,
     "no complete part"),
    (STOW_TYPE, b"--b0undary--\r\n", 400, "no part"),
])
def test_malformed_stow_bodies_are_4xx_and_store_nothing(
        http: httpx2.Client, content_type: str, body: bytes, status: int, message: str) -> None:
    response = http.post("/dicom-web/studies", content=body,
                         headers={"Content-Type": content_type})
    assert response.status_code == status
    assert message in response.json()["Details"]
    assert http.get("/statistics").json()["CountInstances"] == 0


# -- rendered and thumbnail ------------------------------------------------------------


def test_rendered_and_thumbnails_are_the_core_renderings(client: DICOMwebClient,
                                                         http: httpx2.Client) -> None:
    client.store_instances([_dataset(CT)])
    instance = f"/dicom-web/studies/{CT_STUDY}/series/{CT_SERIES}/instances/{CT_SOP}"
    png = http.get(f"{instance}/rendered", params={"window": "40,400,linear"},
                   headers={"Accept": "image/png"})
    assert png.headers["content-type"] == "image/png"
    [core_id] = [found["ID"] for found in http.post("/tools/lookup", content=CT_SOP).json()]
    core = http.get(f"/instances/{core_id}/rendered", headers={"Accept": "image/png"},
                    params={"window-center": 40, "window-width": 400, "smooth": 1})
    assert (numpy.asarray(Image.open(io.BytesIO(png.content))) ==
            numpy.asarray(Image.open(io.BytesIO(core.content)))).all()
    jpeg = client.retrieve_instance_rendered(CT_STUDY, CT_SERIES, CT_SOP,
                                             params={"viewport": "64,64"})
    assert Image.open(io.BytesIO(jpeg)).size == (64, 64)  # JPEG, the standard's default
    framed = http.get(f"{instance}/frames/1/rendered")
    assert framed.status_code == 200 and framed.headers["content-type"] == "image/jpeg"
    study = f"/dicom-web/studies/{CT_STUDY}"
    for path in (study, f"{study}/series/{CT_SERIES}", instance):
        small = http.get(f"{path}/thumbnail")
        assert max(Image.open(io.BytesIO(small.content)).size) <= 128, path
    assert http.get(f"{instance}/frames/2/rendered").status_code == 404  # one frame
    for bad in ({"window": "40"}, {"viewport": "big"}, {"quality": "0"}):
        assert http.get(f"{instance}/rendered", params=bad).status_code == 400, bad
    assert http.get(f"{instance}/rendered", headers={"Accept": "image/gif"}).status_code == 406


def test_study_and_series_rendered_are_every_instance_rendered(
        client: DICOMwebClient, http: httpx2.Client) -> None:
    files = _series(3)
    no_pixels = _dataset(files[0])
    no_pixels.SOPInstanceUID = pydicom.uid.generate_uid()
    del no_pixels.PixelData
    client.store_instances([_dataset(f) for f in files] + [no_pixels])
    first = _dataset(files[0])
    study = f"/dicom-web/studies/{first.StudyInstanceUID}"
    singles = [http.get(f"{study}/series/{first.SeriesInstanceUID}/instances/"
                        f"{_dataset(f).SOPInstanceUID}/rendered",
                        headers={"Accept": "image/png"}).content for f in files]
    for path in (study, f"{study}/series/{first.SeriesInstanceUID}"):
        answer = http.get(f"{path}/rendered", params={"window": "100,1000"},
                          headers={"Accept": 'multipart/related; type="image/png"'})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith('multipart/related; type="image/png"')
        parts = _parts(answer)  # the instance without pixels is left out
        assert [Image.open(io.BytesIO(p)).format for p in parts] == ["PNG"] * 3
        assert len({*parts}) == 3 and len(parts[0]) > 0
    windowed = http.get(f"{study}/series/{first.SeriesInstanceUID}/instances/"
                        f"{first.SOPInstanceUID}/rendered", params={"window": "100,1000"},
                        headers={"Accept": "image/png"}).content
    assert _parts(answer)[0] == windowed and windowed != singles[0]
    jpeg = http.get(f"{study}/rendered")
    assert [Image.open(io.BytesIO(p)).format for p in _parts(jpeg)] == ["JPEG"] * 3
    assert http.get(f"{study}/rendered", headers={"Accept": "image/gif"}).status_code == 406
    assert http.get("/dicom-web/studies/1.2.3/rendered").status_code == 404


# -- WADO-URI and configuration --------------------------------------------------------


def test_wado_uri(client: DICOMwebClient, http: httpx2.Client) -> None:
    client.store_instances([_dataset(CT)])
    params = {"requestType": "WADO", "studyUID": CT_STUDY, "seriesUID": CT_SERIES,
              "objectUID": CT_SOP, "contentType": "application/dicom"}
    response = http.get("/wado", params=params)
    assert response.status_code == 200 and response.content == CT
    assert response.headers["content-type"] == "application/dicom"
    jpeg = http.get("/wado", params={**params, "contentType": "image/jpeg", "rows": "64"})
    assert jpeg.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(jpeg.content)).size == (64, 64)
    assert http.get("/wado", params={**params, "contentType": "text/html"}).status_code == 406
    rle = http.get("/wado", params={**params, "transferSyntax": "1.2.840.10008.1.2.5"})
    assert _dataset(rle.content).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
    assert (_dataset(rle.content).pixel_array == _dataset(CT).pixel_array).all()
    assert http.get("/wado", params={**params, "objectUID": "1.2.3"}).status_code == 404
    missing = http.get("/wado", params={"requestType": "WADO", "studyUID": CT_STUDY})
    assert missing.status_code == 400 and "seriesUID" in missing.json()["Details"]


@pytest.mark.lanthorn_config(DicomWeb={"Root": "/web/", "Host": "archive.example:443",
                                       "Ssl": True})
def test_root_and_host_come_from_the_section(http: httpx2.Client) -> None:
    http.post("/instances", content=CT)
    assert http.get("/dicom-web/studies").status_code == 404
    study = http.get("/web/studies").json()[0]
    assert study["00081190"]["Value"] == [f"https://archive.example:443/web/studies/{CT_STUDY}"]


def test_urls_follow_the_host_header_by_default(lanthorn_process: ServerProcess) -> None:
    server = lanthorn_process.start()
    httpx2.post(f"{server.url}/instances", content=CT)
    study = httpx2.get(f"{server.url}/dicom-web/studies",
                       headers={"Host": "viewer.example:8080"}).json()[0]
    assert study["00081190"]["Value"] == [f"http://viewer.example:8080/dicom-web/studies/{CT_STUDY}"]


@pytest.mark.lanthorn_config(DicomWeb={"Enable": False})
def test_disabled(http: httpx2.Client) -> None:
    assert http.get("/dicom-web/studies").status_code == 404


def test_the_plugin_is_listed(http: httpx2.Client) -> None:
    assert http.get("/plugins/dicomweb").json()["Status"] == "loaded"


@pytest.mark.parametrize("section, message", [
    ({"Root": 5}, '"DicomWeb.Root" must be a str'),
    ({"Root": "dicom-web"}, '"DicomWeb.Root" must start with "/"'),
    ({"Servers": {"peer": 42}}, '"DicomWeb.Servers.peer" must be'),
])
def test_a_malformed_section_stops_start_up(lanthorn_config: Any, section: dict[str, Any],
                                            message: str) -> None:
    server = Server(lanthorn_config.with_overrides(DicomWeb=section), load_entry_points=False,
                    plugins=[lanthorn_dicomweb])
    try:
        with pytest.raises(ConfigError, match=re.escape(message)):
            server.start(background=False)
    finally:
        server.close()
