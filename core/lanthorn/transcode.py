"""Transfer syntax conversion: the one service archives, ingest, modify, the store SCU
and DICOMweb call.

``transcode()`` leaves an instance already in an acceptable syntax untouched, and asks
the ``transcode`` hook otherwise. The hook's default (``builtin/codecs.py``) decodes
every frame through the ``decode_frame`` hook and writes the target syntax: the
uncompressed ones with pydicom, RLE / JPEG-LS / JPEG 2000 with pydicom's encoders, JPEG
baseline with Pillow. The table of what it writes is in ``docs/transcoding.md``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import pack_bits
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from .errors import BadFileFormat, BadRequest, NotDecodable
from .pixels import PIXEL_KEYWORDS, decode_all, frame_count

if TYPE_CHECKING:
    from .server import Server

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                ExplicitVRBigEndian)
#: Written by pydicom's own encoders (with pylibjpeg, pyjpegls, python-gdcm installed).
PYDICOM_ENCODED = (RLELossless, JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000)
LOSSY = (JPEGBaseline8Bit, JPEGLSNearLossless, JPEG2000)
WRITABLE = (*UNCOMPRESSED, *PYDICOM_ENCODED, JPEGBaseline8Bit)
#: The attributes of the image pixel module that a new encoding may change.
PIXEL_MODULE = ("SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration",
                "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                "NumberOfFrames", "LossyImageCompression", "LossyImageCompressionRatio",
                "LossyImageCompressionMethod", *PIXEL_KEYWORDS)


def transcode(server: Server, instance: bytes | Dataset, syntaxes: Sequence[str]) -> bytes:
    """The instance as a DICOM file in the first of ``syntaxes`` that can be written.

    An instance already in one of them is returned as it is (the same bytes). Raises
    BadRequest for an unknown syntax, NotDecodable when no codec can do it.
    """
    syntaxes = [check_syntax(s) for s in syntaxes]
    dataset = _parsed(instance)
    if dataset.file_meta.get("TransferSyntaxUID") in syntaxes:
        return instance if isinstance(instance, bytes) else write(dataset)
    answer = server.plugins.hook.transcode(server=server, instance=dataset,
                                           syntaxes=list(syntaxes))
    if answer is None:
        raise NotDecodable(f"cannot transcode this instance to {', '.join(syntaxes)}")
    return answer


def check_syntax(syntax: str) -> UID:
    """A transfer syntax UID that Lanthorn knows; BadRequest otherwise."""
    text = str(syntax).strip()
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", text) or not UID(text).is_transfer_syntax:
        raise BadRequest(f'"{syntax}" is not a transfer syntax UID')
    return UID(text)


def _parsed(instance: bytes | Dataset) -> Dataset:
    if isinstance(instance, Dataset):
        return instance
    try:
        return pydicom.dcmread(io.BytesIO(instance))
    except Exception as exc:  # any pydicom failure means the bytes are not DICOM
        raise BadFileFormat(f"Cannot parse this DICOM file: {exc}") from None


def default_transcode(server: Server, dataset: Dataset, syntaxes: Sequence[str]) -> bytes | None:
    """The built-in conversion: the first syntax it can write wins; None if none can."""
    for syntax in syntaxes:
        if syntax in WRITABLE:
            try:
                return write(encode(server, dataset, UID(syntax)))
            except (NotDecodable, ValueError, RuntimeError, NotImplementedError):
                continue  # this codec cannot take these pixels: try the next syntax
    return None


def encode(server: Server, dataset: Dataset, syntax: UID) -> Dataset:
    """A copy of ``dataset`` in ``syntax`` (the original is left as it was)."""
    has_pixels = any(k in dataset for k in PIXEL_KEYWORDS)
    if not has_pixels:
        if syntax not in UNCOMPRESSED:
            raise NotDecodable("an instance without pixel data stays uncompressed")
        return _copy(dataset, syntax, keep_pixels=True)
    if "PixelData" not in dataset:
        raise NotDecodable("float pixel data is not transcoded")
    if _bits(dataset) == 1 and syntax not in UNCOMPRESSED:
        raise NotDecodable("1-bit images are only written uncompressed")
    frames = decode_all(server, dataset)
    result = _uncompressed(_copy(dataset, syntax, keep_pixels=False), dataset, frames, syntax)
    if syntax in PYDICOM_ENCODED:
        quality = int(server.config["DicomLossyTranscodingQuality"])
        result.compress(syntax, frames if frame_count(dataset) > 1 else frames[0],
                        generate_instance_uid=False, **_lossy_options(syntax, quality))
    elif syntax == JPEGBaseline8Bit:
        _jpeg_baseline(result, frames, int(server.config["DicomLossyTranscodingQuality"]))
    return result


def _copy(dataset: Dataset, syntax: UID, *, keep_pixels: bool) -> Dataset:
    """New elements for what encoding changes; the others are shared (never modified)."""
    copy = Dataset()
    dropped = set() if keep_pixels else set(PIXEL_MODULE)
    for element in dataset:
        if element.keyword not in dropped:
            copy.add(element)
    copy.file_meta = FileMetaDataset()
    for element in dataset.file_meta:
        if element.keyword != "TransferSyntaxUID":
            copy.file_meta.add(element)
    copy.file_meta.TransferSyntaxUID = syntax
    copy.preamble = dataset.preamble
    return copy


def _uncompressed(result: Dataset, source: Dataset, frames: np.ndarray, syntax: UID) -> Dataset:
    """Decoded frames as native pixel data (RGB, interleaved, for colour)."""
    color = frames.ndim == 4
    bits = 1 if _bits(source) == 1 else frames.dtype.itemsize * 8
    result.SamplesPerPixel = 3 if color else 1
    photometric = source.get("PhotometricInterpretation", "MONOCHROME2")
    result.PhotometricInterpretation = "RGB" if color else photometric
    if color:
        result.PlanarConfiguration = 0
    result.BitsAllocated = bits
    stored = int(source.get("BitsStored") or bits)
    result.BitsStored = min(stored, bits)
    result.HighBit = result.BitsStored - 1
    result.PixelRepresentation = int(frames.dtype.kind == "i")
    if "NumberOfFrames" in source:
        result.NumberOfFrames = source.NumberOfFrames
    for keyword in ("LossyImageCompression", "LossyImageCompressionRatio",
                    "LossyImageCompressionMethod"):
        if keyword in source:
            result[keyword] = source[keyword]
    order = ">" if syntax == ExplicitVRBigEndian else "<"
    data = pack_bits(frames) if bits == 1 else \
        frames.astype(frames.dtype.newbyteorder(order)).tobytes()
    result.add(DataElement(0x7FE00010, "OW" if bits > 8 else "OB", data))
    return result


def _bits(dataset: Dataset) -> int:
    return int(dataset.get("BitsAllocated") or 0)


def _lossy_options(syntax: UID, quality: int) -> dict[str, object]:
    """Quality (1-100, ``DicomLossyTranscodingQuality``) as each lossy encoder's setting."""
    if syntax == JPEG2000:
        return {"j2k_cr": [1 + (100 - quality) / 5]}
    if syntax == JPEGLSNearLossless:
        return {"jls_error": max(1, (100 - quality) // 10)}
    return {}


def _jpeg_baseline(result: Dataset, frames: np.ndarray, quality: int) -> None:
    """8-bit grayscale or RGB as JPEG baseline (Pillow; pydicom has no JPEG encoder)."""
    if frames.dtype != np.uint8:
        raise NotDecodable("JPEG baseline holds 8-bit samples only")
    color = frames.ndim == 4
    encoded = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=quality,
                                    subsampling=1 if color else 0)  # 4:2:2, as DICOM says
        encoded.append(buffer.getvalue())
    if color:
        result.PhotometricInterpretation = "YBR_FULL_422"
    raw_size = frames.nbytes
    result.LossyImageCompression = "01"
    result.LossyImageCompressionRatio = f"{raw_size / sum(map(len, encoded)):.2f}"[:16]
    result.LossyImageCompressionMethod = "ISO_10918_1"
    del result.PixelData
    result.add(DataElement(0x7FE00010, "OB", encapsulate(encoded, has_bot=True),
                           is_undefined_length=True))


def write(dataset: Dataset) -> bytes:
    """A DICOM file in the syntax its file meta names (deflated or big endian alike)."""
    buffer = io.BytesIO()
    syntax = dataset.file_meta.TransferSyntaxUID
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True,
                     implicit_vr=syntax.is_implicit_VR, little_endian=syntax.is_little_endian)
    return buffer.getvalue()
