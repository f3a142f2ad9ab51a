"""ZIP archives and DICOM media through real HTTP: folder names as Orthanc 1.10.1 gave them
for the same instances, members byte-identical to the stored files, a DICOMDIR that
pydicom reads back, request options, and streaming in bounded memory."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid

from lanthorn.testing import make_instance

pytestmark = pytest.mark.all_index_backends

STUDY, OTHER_STUDY = generate_uid(), generate_uid()
SERIES = [generate_uid() for _ in range(5)]
JOHN = {"PatientID": "PX/1", "PatientName": "Dö^Jöhn"}
BRAIN = {**JOHN, "StudyInstanceUID": STUDY, "StudyDescription": "Brain: MRI w/ contrast",
         "AccessionNumber": "ACC1"}
#: Instances of one patient, and the names Orthanc 1.10.1 gave them in the archive.
ORTHANC_NAMES = [
    ({**BRAIN, "SeriesInstanceUID": SERIES[0], "Modality": "MR", "SeriesDescription": "T1 axial",
      "SeriesNumber": 3, "InstanceNumber": 5},
     "PX1 D Jhn/ACC1 Brain MRI w contrast/MR T1 axial/MR000000.dcm"),
    ({**BRAIN, "SeriesInstanceUID": SERIES[0], "Modality": "MR", "SeriesDescription": "T1 axial",
      "SeriesNumber": 3, "InstanceNumber": 2},
     "PX1 D Jhn/ACC1 Brain MRI w contrast/MR T1 axial/MR000001.dcm"),
    ({**BRAIN, "SeriesInstanceUID": SERIES[1], "Modality": "MR", "SeriesDescription": "T1 axial",
      "SeriesNumber": 3},
     "PX1 D Jhn/ACC1 Brain MRI w contrast/MR T1 axial-2/MR000000.dcm"),
    ({**BRAIN, "SeriesInstanceUID": SERIES[2], "Modality": "CT"},
     "PX1 D Jhn/ACC1 Brain MRI w contrast/CT/CT000000.dcm"),
    ({**JOHN, "StudyInstanceUID": OTHER_STUDY, "AccessionNumber": "", "Modality": "",
      "SeriesInstanceUID": SERIES[3], "SeriesNumber": 7},
     "PX1 D Jhn/Unknown Study/Unknown Series/00000000.dcm"),
    ({**JOHN, "StudyInstanceUID": OTHER_STUDY, "AccessionNumber": "A2", "Modality": "SR",
      "SeriesInstanceUID": SERIES[4]},
     "PX1 D Jhn/Unknown Study/SR/SR000000.dcm"),  # the study's tags come from its first
]
ODD_NAMES = [  # characters Orthanc leaves out; and (unlike Orthanc) no folder named ".."
    ({"PatientID": "id.a,b-c_d(e)f'g+h=i@j#k%l&m~n!o", "PatientName": "Lé_Nom-Long^Prénom Ézé",
      "StudyDescription": "x" * 20 + " " + "y" * 20, "AccessionNumber": "Acc 9",
      "Modality": "OT", "SeriesDescription": "a\tb  c..d"},
     f"id.abc_defghijklmno L_NomLong Prnom z/Acc 9 {'x' * 20} {'y' * 20}/OT ab c..d/OT000000.dcm"),
    ({"PatientID": "", "PatientName": "", "Modality": ""},
     "Unknown Patient/Unknown Study/Unknown Series/00000000.dcm"),
    ({"PatientID": "..", "PatientName": "", "Modality": "MRI", "SeriesDescription": ".."},
     "Unknown Patient-2/Unknown Study/MRI ../MR000000.dcm"),
]
#: pydicom's files in many transfer syntaxes: JPEG baseline, extended and lossless, JPEG
#: 2000, RLE, deflated, big endian, implicit VR; and an SR, a waveform, a palette image.
MEDIA_FILES = ["CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "JPEG-lossy.dcm",
               "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_jpeg_gdcm.dcm", "examples_jpeg2k.dcm",
               "liver_expb_1frame.dcm", "image_dfl.dcm", "rtplan.dcm", "examples_palette.dcm",
               "test-SR.dcm", "waveform_ecg.dcm"]


def _upload(client: httpx2.Client, data: bytes) -> dict[str, Any]:
    response = client.post("/instances", content=data)
    assert response.status_code == 200, response.text
    return response.json()


def _members(response: httpx2.Response) -> dict[str, bytes]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert int(response.headers["content-length"]) == len(response.content)
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.fixture
def http(lanthorn_process: Any) -> Iterator[httpx2.Client]:
    lanthorn_process.start()
    with httpx2.Client(base_url=lanthorn_process.url, timeout=60) as client:
        yield client


def test_archive_names_and_bytes_as_orthanc(http: httpx2.Client) -> None:
    files = {name: make_instance(**tags) for tags, name in ORTHANC_NAMES + ODD_NAMES}
    stored = {name: _upload(http, data) for name, data in files.items()}

    expected = {name: files[name] for _, name in ORTHANC_NAMES}
    first = stored[ORTHANC_NAMES[0][1]]
    for url, subset in ((f"/patients/{first['ParentPatient']}", ""),
                        (f"/studies/{first['ParentStudy']}", "/ACC1 "),
                        (f"/series/{first['ParentSeries']}", "/MR T1 axial/")):
        for method in ("GET", "POST"):  # the same archive, asked either way
            response = http.request(method, f"{url}/archive")
            assert _members(response) == {n: d for n, d in expected.items() if subset in n}
            assert response.headers["content-disposition"] == \
                f'attachment; filename="{url.split("/")[2]}.zip"'
    instance = stored[ORTHANC_NAMES[3][1]]["ID"]
    assert _members(http.get(f"/instances/{instance}/archive")) == \
        {ORTHANC_NAMES[3][1]: files[ORTHANC_NAMES[3][1]]}

    odd = [stored[name]["ID"] for _, name in ODD_NAMES]
    response = http.post("/tools/create-archive", json={"Resources": odd})
    assert response.headers["content-disposition"] == 'attachment; filename="Archive.zip"'
    assert _members(response) == {name: files[name] for _, name in ODD_NAMES}


def test_create_archive_of_several_resources_packs_each_instance_once(
        http: httpx2.Client) -> None:
    first, second = (make_instance(StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES[0])
                     for _ in range(2))
    other = make_instance(PatientID="OTHER")
    a, b, c = (_upload(http, data) for data in (first, second, other))
    resources = [b["ID"], a["ParentStudy"], c["ParentPatient"], a["ID"]]
    by_post = _members(http.post("/tools/create-archive", json={"Resources": resources}))
    by_get = _members(http.get(f"/tools/create-archive?resources={','.join(resources)}"))
    assert by_post == by_get
    assert sorted(by_post.values()) == sorted([first, second, other])
    assert _members(http.post("/tools/create-archive", json={"Resources": []})) == {}


@pytest.mark.parametrize("method, url, body, status, words", [
    ("POST", "/tools/create-archive", {"Resources": ["nosuchresource"]}, 404, "nosuchresource"),
    ("POST", "/tools/create-archive", {}, 400, "Resources"),
    ("POST", "/tools/create-archive", {"Resources": "{study}"}, 400, "Resources"),
    ("POST", "/tools/create-media", {"Resources": ["x"], "Asynchronous": True}, 404, "x"),
    ("POST", "/studies/{study}/media", {"Transcode": "1.2.840.10008.1.2.99"}, 400, "syntax"),
    ("GET", "/studies/{study}/archive?transcode=JPEG", None, 400, "syntax"),
    ("POST", "/studies/{study}/archive", {"Filename": 3}, 400, "Filename"),
    ("GET", "/studies/nosuchstudy/archive", None, 404, "nosuchstudy"),
    ("GET", "/series/{study}/media", None, 404, "Series"),
])
def test_archive_requests_that_are_refused(method: str, url: str, body: Any, status: int,
                                           words: str, lanthorn_client: Any,
                                           ct_instance: Any) -> None:
    study = lanthorn_client.post("/instances", content=ct_instance()).json()["ParentStudy"]
    if isinstance(body, dict):
        body = {k: [v.format(study=study) for v in vs] if isinstance(vs, list) else
                vs.format(study=study) if isinstance(vs, str) else vs for k, vs in body.items()}
    response = lanthorn_client.request(method, url.format(study=study), json=body)
    assert response.status_code == status
    assert words in response.json()["Details"]


def test_filename_option(lanthorn_client: Any, ct_instance: Any) -> None:
    study = lanthorn_client.post("/instances", content=ct_instance()).json()["ParentStudy"]
    for response in (lanthorn_client.get(f"/studies/{study}/media?filename=cd.zip"),
                     lanthorn_client.post(f"/studies/{study}/archive",
                                          json={"Filename": 'c"d.zip'})):
        assert response.headers["content-disposition"] == 'attachment; filename="cd.zip"'


@pytest.mark.lanthorn_config(StorageCompression=True)
def test_compressed_storage_is_inflated_on_the_way_out(lanthorn_client: Any) -> None:
    files = [make_instance(rows=256, columns=256, seed=n, StudyInstanceUID=STUDY)
             for n in range(3)]
    study = [lanthorn_client.post("/instances", content=d).json() for d in files][0]["ParentStudy"]
    for kind in ("archive", "media"):
        members = _members(lanthorn_client.get(f"/studies/{study}/{kind}"))
        members.pop("DICOMDIR", None)
        assert sorted(members.values()) == sorted(files)


@contextmanager
def file_set(path: Path) -> Iterator[FileSet]:
    """pydicom's view of a DICOMDIR; its staging folder is removed at once (as the server
    does: pydicom would only do it when the object is collected, with a warning)."""
    loaded = FileSet(path)
    try:
        yield loaded
    finally:
        loaded._stage["t"].cleanup()


def _unzip(response: httpx2.Response, folder: Path) -> dict[str, bytes]:
    members = _members(response)
    for name, data in members.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return members


def test_media_has_a_dicomdir_that_pydicom_reads_back(http: httpx2.Client,
                                                      tmp_path: Path) -> None:
    files = {Path(get_testdata_file(name)).read_bytes() for name in MEDIA_FILES}
    answers = [_upload(http, data) for data in files]
    patients = sorted({a["ParentPatient"] for a in answers})
    by_uid = {pydicom.dcmread(io.BytesIO(d), stop_before_pixels=True).SOPInstanceUID: d
              for d in files}
    response = http.post("/tools/create-media", json={"Resources": patients})
    members = _unzip(response, tmp_path)
    assert "DICOMDIR" in members and len(members) == len(files) + 1

    dicomdir = pydicom.dcmread(tmp_path / "DICOMDIR")
    assert dicomdir.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"
    assert dicomdir.FileSetID == "LANTHORN_MEDIA"
    types = [r.DirectoryRecordType for r in dicomdir.DirectoryRecordSequence]
    assert types.count("PATIENT") == len(patients) and types.count("IMAGE") == len(files)
    with file_set(tmp_path / "DICOMDIR") as media:
        assert len(media) == len(files)
        for instance in media:
            data = Path(instance.path).read_bytes()
            assert data == by_uid[instance.SOPInstanceUID]
            meta = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta
            assert instance.TransferSyntaxUID == meta.TransferSyntaxUID
            assert instance.SOPClassUID == meta.MediaStorageSOPClassUID


def test_media_of_each_level(http: httpx2.Client, tmp_path: Path) -> None:
    files = [make_instance(StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES[0]),
             make_instance(StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES[1]),
             make_instance(PatientID="OTHER")]
    first = [_upload(http, data) for data in files][0]
    for level, key, count in (("patients", "ParentPatient", 2), ("studies", "ParentStudy", 2),
                              ("series", "ParentSeries", 1), ("instances", "ID", 1)):
        for method in ("GET", "POST"):
            folder = tmp_path / f"{level}-{method}"
            members = _unzip(http.request(method, f"/{level}/{first[key]}/media"), folder)
            assert members.pop("DICOMDIR")
            assert sorted(members.values()) == sorted(files[:count])
            with file_set(folder / "DICOMDIR") as media:
                assert len(media) == count


def test_extended_media_adds_descriptions(http: httpx2.Client, tmp_path: Path) -> None:
    data = make_instance(SeriesDescription="Axial T2", PatientSex="F")
    study = _upload(http, data)["ParentStudy"]
    for url, extended in ((f"/studies/{study}/media", False),
                          (f"/studies/{study}/media?extended", True),
                          (f"/tools/create-media?resources={study}", False),
                          (f"/tools/create-media-extended?resources={study}", True),
                          ("/tools/create-media-extended", True)):
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        response = http.post(url, json={"Resources": [study]}) if url.endswith("-extended") \
            else http.get(url)
        members = _unzip(response, folder)
        assert data in members.values()
        with file_set(folder / "DICOMDIR") as media:
            series = media._tree.children[0].children[0].children[0]._record
        assert ("SeriesDescription" in series) is extended, url
        assert series.Modality == "CT" and series.SeriesInstanceUID


@pytest.mark.slow
@pytest.mark.lanthorn_config(SyncStorageArea=False)
def test_archive_of_a_large_study_streams(lanthorn_process: Any) -> None:
    """150 MB of instances come out of a server whose memory grows by a small fraction
    of that (peak RSS measured by the kernel while the archive is downloaded)."""
    lanthorn_process.start()
    count, size = 300, 512 * 512 * 2
    common = {"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid(),
              "rows": 512, "columns": 512}
    with httpx2.Client(base_url=lanthorn_process.url, timeout=60) as client:
        for seed in range(count):
            study = _upload(client, make_instance(seed=seed, **common))["ParentStudy"]
        status = Path(f"/proc/{lanthorn_process.process.pid}/status")
        Path(f"/proc/{lanthorn_process.process.pid}/clear_refs").write_text("5")  # peak := now
        before = _kilobytes(status, "VmRSS")
        downloaded = 0
        with client.stream("GET", f"/studies/{study}/archive") as response:
            assert response.status_code == 200
            length = int(response.headers["content-length"])
            for chunk in response.iter_bytes():
                downloaded += len(chunk)
    growth = (_kilobytes(status, "VmHWM") - before) * 1024
    assert downloaded == length > count * size
    assert growth < 32 * 2**20, f"the server grew by {growth / 2**20:.0f} MB"


def _kilobytes(status: Path, field: str) -> int:
    line = next(x for x in status.read_text().splitlines() if x.startswith(f"{field}:"))
    return int(line.split()[1])
