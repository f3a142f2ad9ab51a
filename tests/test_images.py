"""Rendering and pixel routes: every image decoded with Pillow (or numpy) and its pixel
values checked against what the stored values, the rescale, the window and the
photometric interpretation make of them, as Orthanc 1.10 answered for the same files."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, generate_uid

from lanthorn.testing import make_image

ROWS, COLUMNS = 48, 64
_Y, _X = np.mgrid[0:ROWS, 0:COLUMNS]
RAMP = (_Y * 64 + _X).astype(np.uint16)  # 0 ... 3071, in 12 bits
SIGNED = (_X * 40 - _Y * 50 - 700).astype(np.int16)  # -3050 ... 1820
RGB = np.stack([_X * 4, _Y * 5, 255 - _X * 2], axis=-1).astype(np.uint8)
FRAMES = np.stack([RAMP // (f + 1) for f in range(3)])
CT_WINDOW = {"RescaleSlope": 2, "RescaleIntercept": -1000, "WindowCenter": 1000,
             "WindowWidth": 2000}


def upload(client: Any, data: bytes) -> str:
    answer = client.post("/instances", content=data)
    assert answer.status_code == 200, answer.text
    return answer.json()["ID"]


def picture(response: Any, media_type: str = "image/png") -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    return np.asarray(Image.open(io.BytesIO(response.content)))


def stretched(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return np.rint((values - low) * (255 / (high - low))).astype(np.uint8)


def windowed(values: np.ndarray, center: float, width: float) -> np.ndarray:
    return np.floor(np.clip((values - (center - width / 2)) * (255 / width), 0, 255)) \
        .astype(np.uint8)


def test_preview_stretches_grayscale_and_inverts_monochrome1(lanthorn_client: Any) -> None:
    gray = upload(lanthorn_client, make_image(RAMP, bits_stored=12, **CT_WINDOW))
    assert np.array_equal(picture(lanthorn_client.get(f"/instances/{gray}/preview")),
                          stretched(RAMP))
    inverted = upload(lanthorn_client, make_image(RAMP, photometric="MONOCHROME1"))
    assert np.array_equal(picture(lanthorn_client.get(f"/instances/{inverted}/preview")),
                          255 - stretched(RAMP))
    signed = upload(lanthorn_client, make_image(SIGNED))
    assert np.array_equal(picture(lanthorn_client.get(f"/instances/{signed}/preview")),
                          stretched(SIGNED))
    color = upload(lanthorn_client, make_image(RGB, photometric="RGB"))
    assert np.array_equal(picture(lanthorn_client.get(f"/instances/{color}/preview")), RGB)


def test_preview_of_compressed_ybr_is_rgb(lanthorn_client: Any) -> None:
    for name in ("SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle_2frame.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        data = Path(get_testdata_file(name)).read_bytes()
        instance = upload(lanthorn_client, data)
        expected = pydicom.dcmread(io.BytesIO(data)).pixel_array  # RGB, as pydicom decodes
        first = expected[0] if expected.ndim == 4 else expected
        got = picture(lanthorn_client.get(f"/instances/{instance}/preview"))
        assert np.array_equal(got, first if first.ndim == 3 else stretched(first)), name


def test_rendered_applies_rescale_and_window(lanthorn_client: Any) -> None:
    instance = upload(lanthorn_client, make_image(RAMP, bits_stored=12, **CT_WINDOW))
    hounsfield = RAMP * 2.0 - 1000
    url = f"/instances/{instance}/rendered"
    assert np.array_equal(picture(lanthorn_client.get(url)), windowed(hounsfield, 1000, 2000))
    assert np.array_equal(
        picture(lanthorn_client.get(f"{url}?window-center=40&window-width=400")),
        windowed(hounsfield, 40, 400))
    # Without a window in the file: the range of the stored values (12 bits here).
    plain = upload(lanthorn_client, make_image(RAMP, bits_stored=12))
    assert np.array_equal(picture(lanthorn_client.get(f"/instances/{plain}/rendered")),
                          windowed(RAMP.astype(float), 2048, 4096))
    signed = upload(lanthorn_client, make_image(SIGNED))
    assert np.array_equal(picture(lanthorn_client.get(f"/instances/{signed}/rendered")),
                          windowed(SIGNED.astype(float), 0, 65536))
    inverted = upload(lanthorn_client, make_image(RAMP, photometric="MONOCHROME1",
                                                  bits_stored=12, **CT_WINDOW))
    assert np.array_equal(picture(lanthorn_client.get(f"/instances/{inverted}/rendered")),
                          255 - windowed(hounsfield, 1000, 2000))


def test_rendered_resizes_within_the_box_and_encodes_jpeg(lanthorn_client: Any) -> None:
    instance = upload(lanthorn_client, make_image(RAMP, bits_stored=12, **CT_WINDOW))
    url = f"/instances/{instance}/rendered"
    assert picture(lanthorn_client.get(f"{url}?width=32")).shape == (24, 32)
    assert picture(lanthorn_client.get(f"{url}?width=100&height=12")).shape == (12, 16)
    smooth = picture(lanthorn_client.get(f"{url}?height=24&smooth=1"))
    assert smooth.shape == (24, 32)
    full = windowed(RAMP * 2.0 - 1000, 1000, 2000)
    assert np.abs(smooth.astype(int) - full[::2, ::2].astype(int)).mean() < 8
    jpeg = picture(lanthorn_client.get(url, headers={"Accept": "image/jpeg"}), "image/jpeg")
    assert np.abs(jpeg.astype(int) - full.astype(int)).max() <= 16
    worse = lanthorn_client.get(f"{url}?quality=5", headers={"Accept": "image/jpeg"})
    better = lanthorn_client.get(f"{url}?quality=100", headers={"Accept": "image/jpeg"})
    assert len(worse.content) < len(better.content)
    browser = "text/html,application/xhtml+xml,image/webp,*/*;q=0.8"
    assert picture(lanthorn_client.get(url, headers={"Accept": browser})).shape == (48, 64)


def test_integer_images_clip_the_stored_values(lanthorn_client: Any) -> None:
    gray = upload(lanthorn_client, make_image(RAMP, bits_stored=12, **CT_WINDOW))
    assert np.array_equal(picture(lanthorn_client.get(f"/instances/{gray}/image-uint8")),
                          np.minimum(RAMP, 255))
    wide = picture(lanthorn_client.get(f"/instances/{gray}/image-uint16"))
    assert wide.dtype == np.uint16 and np.array_equal(wide, RAMP)
    signed = upload(lanthorn_client, make_image(SIGNED))
    assert np.array_equal(picture(lanthorn_client.get(f"/instances/{signed}/image-uint16")),
                          np.maximum(SIGNED, 0))
    # A signed PNG does not exist: two's complement in 16 bits, as Orthanc sends it.
    as_int16 = picture(lanthorn_client.get(f"/instances/{signed}/image-int16"))
    assert np.array_equal(as_int16.astype(np.uint16).view(np.int16), SIGNED)
    color = upload(lanthorn_client, make_image(RGB, photometric="RGB"))
    refused = lanthorn_client.get(f"/instances/{color}/image-uint8")
    assert refused.status_code == 415
    assert "grayscale" in refused.json()["Details"]


def test_frames_of_a_multiframe_instance(lanthorn_client: Any) -> None:
    instance = upload(lanthorn_client, make_image(FRAMES, bits_stored=12))
    base = f"/instances/{instance}/frames"
    assert lanthorn_client.get(base).json() == [0, 1, 2]
    assert lanthorn_client.get(f"{base}/1").json() == [
        "image-int16", "image-uint16", "image-uint8", "matlab", "numpy", "preview", "raw",
        "raw.gz", "rendered"]
    for frame in range(3):
        assert np.array_equal(picture(lanthorn_client.get(f"{base}/{frame}/preview")),
                              stretched(FRAMES[frame]))
        assert np.array_equal(picture(lanthorn_client.get(f"{base}/{frame}/image-uint16")),
                              FRAMES[frame])
        raw = lanthorn_client.get(f"{base}/{frame}/raw")
        assert raw.headers["content-type"] == "application/octet-stream"
        assert raw.content == FRAMES[frame].astype("<u2").tobytes()
        packed = lanthorn_client.get(f"{base}/{frame}/raw.gz")  # the client inflates it
        assert packed.headers["content-encoding"] == "gzip"
        assert packed.headers["content-type"] == "application/gzip"
        assert packed.content == raw.content
    # The preview of the instance is its first frame.
    assert np.array_equal(picture(lanthorn_client.get(f"/instances/{instance}/preview")),
                          stretched(FRAMES[0]))
    # As Orthanc: a missing frame is a 404 for images and a 400 for raw bytes.
    assert lanthorn_client.get(f"{base}/3/preview").status_code == 404
    assert lanthorn_client.get(f"{base}/x/rendered").status_code == 404
    assert lanthorn_client.get(f"{base}/-1/preview").status_code == 404
    assert lanthorn_client.get(f"{base}/7/raw").status_code == 400


def test_portable_arbitrary_map(lanthorn_client: Any) -> None:
    """PAM (``Accept: image/x-portable-arbitrarymap``): a text header, big endian samples."""
    accept = {"Accept": "image/x-portable-arbitrarymap"}
    gray = upload(lanthorn_client, make_image(RAMP, bits_stored=12))
    response = lanthorn_client.get(f"/instances/{gray}/image-uint16", headers=accept)
    assert response.headers["content-type"] == "image/x-portable-arbitrarymap"
    header, _, body = response.content.partition(b"ENDHDR\n")
    assert header.split() == [b"P7", b"WIDTH", b"64", b"HEIGHT", b"48", b"DEPTH", b"1",
                              b"MAXVAL", b"65535", b"TUPLTYPE", b"GRAYSCALE"]
    assert np.array_equal(np.frombuffer(body, ">u2").reshape(ROWS, COLUMNS), RAMP)
    color = upload(lanthorn_client, make_image(RGB, photometric="RGB"))
    header, _, body = lanthorn_client.get(f"/instances/{color}/preview",
                                          headers=accept).content.partition(b"ENDHDR\n")
    assert b"DEPTH 3\nMAXVAL 255\nTUPLTYPE RGB" in header
    assert np.array_equal(np.frombuffer(body, np.uint8).reshape(ROWS, COLUMNS, 3), RGB)


def test_raw_frame_of_a_jpeg_is_the_jpeg_stream(lanthorn_client: Any) -> None:
    instance = upload(lanthorn_client,
                      Path(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")).read_bytes())
    raw = lanthorn_client.get(f"/instances/{instance}/frames/0/raw")
    assert raw.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(raw.content)).size == (100, 100)


def test_numpy_of_instances_frames_and_series(lanthorn_client: Any) -> None:
    shared = {"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid(),
              "RescaleSlope": 2, "RescaleIntercept": -5}
    second = upload(lanthorn_client, make_image(FRAMES, bits_stored=12, InstanceNumber=2,
                                                **shared))
    first = upload(lanthorn_client, make_image(RAMP, bits_stored=12, InstanceNumber=1, **shared))

    def npy(url: str) -> np.ndarray:
        response = lanthorn_client.get(url)
        assert response.status_code == 200, response.text
        loaded = np.load(io.BytesIO(response.content))
        return loaded["arr_0"] if isinstance(loaded, np.lib.npyio.NpzFile) else loaded

    values = npy(f"/instances/{second}/numpy")
    assert values.dtype == np.float32 and values.shape == (3, ROWS, COLUMNS, 1)
    assert np.array_equal(values[..., 0], FRAMES * 2.0 - 5)
    stored = npy(f"/instances/{second}/numpy?rescale=false&compress")
    assert stored.dtype == np.uint16 and np.array_equal(stored[..., 0], FRAMES)
    frame = npy(f"/instances/{second}/frames/2/numpy")
    assert frame.shape == (ROWS, COLUMNS, 1) and np.array_equal(frame[..., 0], FRAMES[2] * 2.0 - 5)
    color = upload(lanthorn_client, make_image(RGB, photometric="RGB"))
    assert np.array_equal(npy(f"/instances/{color}/numpy"), RGB[np.newaxis])
    parent = lanthorn_client.get(f"/instances/{first}/series").json()["ID"]
    volume = npy(f"/series/{parent}/numpy")  # by InstanceNumber: the single frame first
    assert volume.shape == (4, ROWS, COLUMNS, 1)
    assert np.array_equal(volume[0, ..., 0], RAMP * 2.0 - 5)
    assert np.array_equal(volume[1:, ..., 0], FRAMES * 2.0 - 5)


def test_matlab_export(lanthorn_client: Any) -> None:
    small = (np.arange(6).reshape(2, 3) * 100).astype(np.uint16)
    instance = upload(lanthorn_client, make_image(small))
    response = lanthorn_client.get(f"/instances/{instance}/matlab")
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "double([ 0 100 200 ; 300 400 500 ])"
    multi = upload(lanthorn_client, make_image(np.stack([small, small + 1])))
    assert lanthorn_client.get(f"/instances/{multi}/frames/1/matlab").text == \
        "double([ 1 101 201 ; 301 401 501 ])"


def test_pdf_of_an_encapsulated_document(lanthorn_client: Any) -> None:
    document = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"
    dataset = pydicom.dcmread(io.BytesIO(make_image(RAMP)))
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
                    "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation"):
        delattr(dataset, keyword)
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = \
        "1.2.840.10008.5.1.4.1.1.104.1"
    dataset.MIMETypeOfEncapsulatedDocument = "application/pdf"
    dataset.EncapsulatedDocument = document
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    instance = upload(lanthorn_client, buffer.getvalue())
    response = lanthorn_client.get(f"/instances/{instance}/pdf")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.content == document
    refused = lanthorn_client.get(f"/instances/{instance}/preview")
    assert refused.status_code == 400 and "not an image" in refused.json()["Details"]
    image = upload(lanthorn_client, make_image(RAMP))
    assert lanthorn_client.get(f"/instances/{image}/pdf").status_code == 404


def test_images_that_cannot_be_shown(lanthorn_client: Any) -> None:
    report = upload(lanthorn_client, Path(get_testdata_file("test-SR.dcm")).read_bytes())
    for operation in ("preview", "rendered", "image-uint8", "numpy", "matlab", "frames/0/raw"):
        response = lanthorn_client.get(f"/instances/{report}/{operation}")
        assert response.status_code == 400, operation
        assert "no pixel data" in response.json()["Details"]
    broken = pydicom.dcmread(io.BytesIO(make_image(RGB, photometric="RGB")))
    broken.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    broken.PixelData = encapsulate([b"\xff\xd8 this is no JPEG stream \xff\xd9"])
    broken["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    broken.save_as(buffer, enforce_file_format=True)
    instance = upload(lanthorn_client, buffer.getvalue())
    response = lanthorn_client.get(f"/instances/{instance}/preview")
    assert response.status_code == 415
    assert "cannot decode" in response.json()["Details"]
    placeholder = lanthorn_client.get(f"/instances/{instance}/preview?returnUnsupportedImage")
    assert picture(placeholder).shape == (64, 64)
    for path in ("preview", "frames/0", "frames/0/raw", "numpy", "pdf"):
        assert lanthorn_client.get(f"/instances/nosuchinstance/{path}").status_code == 404
    assert lanthorn_client.get("/series/nosuchseries/numpy").status_code == 404


@pytest.mark.parametrize("query, headers, status, words", [
    ("?quality=0", {"Accept": "image/jpeg"}, 400, "quality"),
    ("?quality=high", {}, 400, "quality"),
    ("?window-center=abc&window-width=10", {}, 400, "window-center"),
    ("?width=-3", {}, 400, "width"),
    ("", {"Accept": "text/plain"}, 406, "image/png"),
])
def test_bad_rendering_arguments(lanthorn_client: Any, query: str, headers: dict[str, str],
                                 status: int, words: str) -> None:
    instance = upload(lanthorn_client, make_image(RAMP))
    response = lanthorn_client.get(f"/instances/{instance}/rendered{query}", headers=headers)
    assert response.status_code == status
    assert words in response.json()["Details"]


def test_images_through_real_http(lanthorn_process: Any) -> None:
    lanthorn_process.start()
    with httpx2.Client(base_url=lanthorn_process.url, timeout=30) as client:
        instance = upload(client, make_image(RAMP, bits_stored=12, **CT_WINDOW))
        assert np.array_equal(picture(client.get(f"/instances/{instance}/preview")),
                              stretched(RAMP))
        rendered = picture(client.get(f"/instances/{instance}/frames/0/rendered?width=32"))
        assert rendered.shape == (24, 32)
        assert np.array_equal(rendered, windowed(RAMP * 2.0 - 1000, 1000, 2000)[1::2, 1::2])
        jpeg = picture(client.get(f"/instances/{instance}/preview",
                                  headers={"Accept": "image/jpeg"}), "image/jpeg")
        assert np.abs(jpeg.astype(int) - stretched(RAMP).astype(int)).max() <= 16
