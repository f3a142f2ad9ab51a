"""``POST /tools/create-dicom``: instances made from JSON tags, PNG/JPEG images and PDF
documents, alone, as a series, or under a parent; stored through the ingest path."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image

from lanthorn.testing import make_image

GRAY = (np.arange(12 * 16).reshape(12, 16) % 256).astype(np.uint8)
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"


def data_uri(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def encoded(pixels: np.ndarray, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def create(client: Any, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    response = client.post("/tools/create-dicom", json=body)
    assert response.status_code == status, response.text
    return response.json()


def stored(client: Any, instance: str) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(client.get(f"/instances/{instance}/file").content))


def test_tags_only(lanthorn_client: Any) -> None:
    answer = create(lanthorn_client, {"Tags": {"PatientName": "Dupré^Zoé", "PatientID": "C1",
                                               "StudyDescription": "made by hand"}})
    assert set(answer) == {"ID", "ParentPatient", "ParentStudy", "ParentSeries", "Path",
                           "Status"}
    assert answer["Path"] == f"/instances/{answer['ID']}" and answer["Status"] == "Success"
    dataset = stored(lanthorn_client, answer["ID"])
    assert dataset.PatientName == "Dupré^Zoé" and dataset.SpecificCharacterSet == "ISO_IR 100"
    assert dataset.StudyDescription == "made by hand"
    assert dataset.StudyDate and dataset.ContentTime and dataset.SOPInstanceUID
    metadata = lanthorn_client.get(f"/instances/{answer['ID']}/metadata?expand").json()
    assert metadata["Origin"] == "RestApi"
    # A name that Latin-1 cannot spell makes the instance UTF-8.
    chinese = create(lanthorn_client, {"Tags": {"PatientName": "李^雷", "PatientID": "C2"}})
    dataset = stored(lanthorn_client, chinese["ID"])
    assert dataset.SpecificCharacterSet == "ISO_IR 192" and dataset.PatientName == "李^雷"


def test_images_become_pixel_data(lanthorn_client: Any) -> None:
    gray = create(lanthorn_client, {"Tags": {"PatientID": "C1"},
                                    "Content": data_uri("image/png", encoded(GRAY))})
    png = lanthorn_client.get(f"/instances/{gray['ID']}/image-uint8")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))), GRAY)
    dataset = stored(lanthorn_client, gray["ID"])
    assert (dataset.PhotometricInterpretation, dataset.BitsAllocated) == ("MONOCHROME2", 8)
    assert dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"

    wide = (GRAY.astype(np.uint16) * 200)
    deep = create(lanthorn_client, {"Content": data_uri("image/png", encoded(wide))})
    assert np.array_equal(stored(lanthorn_client, deep["ID"]).pixel_array, wide)

    rgba = np.zeros((12, 16, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = GRAY, 100, 255 - GRAY, 128
    color = create(lanthorn_client, {"Content": data_uri("image/png", encoded(rgba))})
    assert np.array_equal(stored(lanthorn_client, color["ID"]).pixel_array, rgba[..., :3])

    rgb = np.stack([GRAY, GRAY // 2, 255 - GRAY], axis=-1)
    jpeg = create(lanthorn_client,
                  {"Content": data_uri("image/jpeg", encoded(rgb, "JPEG"))})
    decoded = stored(lanthorn_client, jpeg["ID"])
    assert decoded.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert np.abs(decoded.pixel_array.astype(int) - rgb.astype(int)).mean() < 8


def test_pdf_is_encapsulated(lanthorn_client: Any) -> None:
    answer = create(lanthorn_client, {"Tags": {"PatientID": "C1", "SeriesDescription": "report"},
                                      "Content": data_uri("application/pdf", PDF)})
    assert lanthorn_client.get(f"/instances/{answer['ID']}/pdf").content == PDF
    dataset = stored(lanthorn_client, answer["ID"])
    assert dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"
    assert (dataset.Modality, dataset.MIMETypeOfEncapsulatedDocument) == \
        ("OT", "application/pdf")


def test_a_list_of_contents_makes_a_series(lanthorn_client: Any) -> None:
    contents = [data_uri("image/png", encoded(GRAY + n)) for n in range(3)]
    answer = create(lanthorn_client, {"Tags": {"PatientID": "C1"}, "Content": contents})
    assert answer["Path"] == f"/series/{answer['ID']}" and answer["Status"] == "Success"
    instances = lanthorn_client.get(f"/series/{answer['ID']}/instances").json()
    numbers = sorted(int(i["MainDicomTags"]["InstanceNumber"]) for i in instances)
    assert numbers == [1, 2, 3]
    pixels = sorted(stored(lanthorn_client, i["ID"]).pixel_array[0, 0] for i in instances)
    assert pixels == [GRAY[0, 0], GRAY[0, 0] + 1, GRAY[0, 0] + 2]


def test_parent_modules_are_copied(lanthorn_client: Any) -> None:
    original = lanthorn_client.post("/instances", content=make_image(
        GRAY, PatientName="PARENT^PAT", PatientID="P9", StudyDescription="the study",
        AccessionNumber="A1", SeriesDescription="old series")).json()
    child = create(lanthorn_client, {"Parent": original["ParentStudy"],
                                     "Tags": {"SeriesDescription": "new series"},
                                     "Content": data_uri("image/png", encoded(GRAY))})
    assert child["ParentStudy"] == original["ParentStudy"]
    assert child["ParentSeries"] != original["ParentSeries"]
    dataset = stored(lanthorn_client, child["ID"])
    assert (dataset.PatientName, dataset.AccessionNumber, dataset.SeriesDescription) == \
        ("PARENT^PAT", "A1", "new series")
    sibling = create(lanthorn_client, {"Parent": original["ParentSeries"], "Tags": {}})
    assert sibling["ParentSeries"] == original["ParentSeries"]
    refused = lanthorn_client.post("/tools/create-dicom", json={
        "Parent": original["ParentStudy"], "Tags": {"PatientName": "OTHER"}})
    assert refused.status_code == 400 and "Force" in refused.json()["Details"]


def test_private_sequence_and_binary_tags(lanthorn_client: Any) -> None:
    answer = create(lanthorn_client, {
        "PrivateCreator": "LANTHORN TEST",
        "Tags": {"0011,1001": "private text", "0011,1002": "data:;base64,AAECAw==",
                 "ProcedureCodeSequence": [{"CodeValue": "123", "CodingSchemeDesignator": "L"}],
                 "Rows": "3", "PatientWeight": "70.5"}})
    dataset = stored(lanthorn_client, answer["ID"])
    block = dataset.private_block(0x0011, "LANTHORN TEST")
    assert block[0x01].value == "private text" and block[0x02].value == b"\0\1\2\3"
    assert dataset.ProcedureCodeSequence[0].CodeValue == "123"
    assert dataset.Rows == 3 and float(dataset.PatientWeight) == 70.5


def test_forced_identifiers(lanthorn_client: Any) -> None:
    body = {"Tags": {"SOPInstanceUID": "1.2.3.4.5", "StudyInstanceUID": "1.2.3"}}
    refused = lanthorn_client.post("/tools/create-dicom", json=body)
    assert refused.status_code == 400 and "Force" in refused.json()["Details"]
    answer = create(lanthorn_client, {**body, "Force": True})
    dataset = stored(lanthorn_client, answer["ID"])
    assert (dataset.SOPInstanceUID, dataset.StudyInstanceUID) == ("1.2.3.4.5", "1.2.3")


@pytest.mark.parametrize("body, status, words", [
    ({"Tags": {"NoSuchKeyword": "x"}}, 400, "NoSuchKeyword"),
    ({"Tags": ["PatientID"]}, 400, "Tags"),
    ({"Tags": {"PatientID": 12}}, 400, "string"),
    ({"Tags": {"Rows": "many"}}, 400, "US"),
    ({"Content": "not a data uri"}, 400, "data URI"),
    ({"Content": "data:image/png;base64,!!!"}, 400, "base64"),
    ({"Content": "data:image/png;base64,AAAA"}, 400, "cannot be read"),
    ({"Content": "data:text/plain;base64,AAAA"}, 400, "text/plain"),
    ({"Content": "data:application/pdf;base64,AAAA"}, 400, "PDF"),
    ({"Content": [data_uri("image/png", encoded(GRAY))] * 2,
      "Tags": {"SOPInstanceUID": "1.2.3"}, "Force": True}, 400, "SOPInstanceUID"),
    ({"Content": []}, 400, "empty"),
    ({"Content": [data_uri("image/png", encoded(GRAY))] * 2,
      "Tags": {"0008,0018": "1.2.3"}, "Force": True}, 400, "SOPInstanceUID"),
    ({"Parent": "nosuchresource"}, 404, "nosuchresource"),
])
def test_bad_requests_store_nothing(lanthorn_client: Any, body: dict[str, Any], status: int,
                                    words: str) -> None:
    response = lanthorn_client.post("/tools/create-dicom", json=body)
    assert response.status_code == status
    assert words in response.json()["Details"]
    assert lanthorn_client.get("/statistics").json()["CountInstances"] == 0
