"""Pixels of stored instances: decoding frames, and turning them into images to show.

Decoding goes through the ``decode_frame`` hook, whose default (``builtin/codecs.py``)
is pydicom's pixel decoders with pylibjpeg, pyjpegls and python-gdcm behind them, so a
plugin can add a codec for every caller at once: rendering, ``/numpy`` and transcoding.
A decoded frame holds the *stored* values (no rescale), colour as RGB.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_rescale

from .errors import BadRequest, InexistentItem, LanthornError, NotDecodable

if TYPE_CHECKING:
    from .server import Server

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: The image formats of the rendering routes, by media type (``Accept``).
IMAGE_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG",
                 "image/x-portable-arbitrarymap": "PAM"}


def frame_count(dataset: Dataset) -> int:
    value = dataset.get("NumberOfFrames")
    try:
        return max(int(value), 1) if value not in (None, "") else 1
    except (TypeError, ValueError):
        return 1


def check_frame(dataset: Dataset, frame: int) -> None:
    """Refuse an instance without pixels (400) and a frame it does not have (404)."""
    if not any(k in dataset for k in PIXEL_KEYWORDS):
        raise BadRequest("this instance has no pixel data: it is not an image")
    if not 0 <= frame < frame_count(dataset):
        raise InexistentItem(f"no frame {frame} in this instance "
                             f"({frame_count(dataset)} frames, numbered from 0)")


def decode_frame(server: Server, dataset: Dataset, frame: int) -> np.ndarray:
    """One frame's stored values, (rows, columns) or (rows, columns, 3) in RGB."""
    check_frame(dataset, frame)
    try:
        pixels = server.plugins.hook.decode_frame(server=server, instance=dataset, frame=frame)
    except LanthornError:
        raise
    except Exception as exc:  # a codec failing on these bytes: the image cannot be read
        raise NotDecodable(f"cannot decode this image: {exc}") from None
    if pixels is None:
        syntax = dataset.file_meta.get("TransferSyntaxUID", "")
        raise NotDecodable(f"no decoder for this image (transfer syntax {syntax})")
    return pixels


def decode_all(server: Server, dataset: Dataset) -> np.ndarray:
    """Every frame, stacked: (frames, rows, columns[, 3])."""
    return np.stack([decode_frame(server, dataset, f) for f in range(frame_count(dataset))])


def raw_frame(dataset: Dataset, frame: int) -> bytes:
    """A frame's bytes as stored: the compressed stream, or its slice of the pixel data."""
    check_frame(dataset, frame)
    data = dataset.PixelData
    if dataset.file_meta.TransferSyntaxUID.is_encapsulated:
        frames = generate_frames(data, number_of_frames=frame_count(dataset))
        return next(f for index, f in enumerate(frames) if index == frame)
    size = len(data) // frame_count(dataset)
    return data[frame * size:(frame + 1) * size]


# -- images to show --------------------------------------------------------------------

def displayable(dataset: Dataset, pixels: np.ndarray) -> np.ndarray:
    """Palette colour as RGB; other frames unchanged."""
    if dataset.get("PhotometricInterpretation") == "PALETTE COLOR":
        return apply_color_lut(pixels, dataset)
    return pixels


def is_color(pixels: np.ndarray) -> bool:
    return pixels.ndim == 3


def preview(dataset: Dataset, pixels: np.ndarray) -> np.ndarray:
    """Grayscale stretched from its minimum to its maximum, MONOCHROME1 inverted."""
    pixels = displayable(dataset, pixels)
    if is_color(pixels):
        return _color_8bit(dataset, pixels)
    return _monochrome1(dataset, _stretched(pixels))


def _stretched(pixels: np.ndarray) -> np.ndarray:
    """From the minimum (0) to the maximum (255), rounded."""
    low, high = pixels.min(), pixels.max()
    scale = 0.0 if high == low else 255 / (float(high) - float(low))
    if pixels.dtype.kind not in "iu":
        return np.rint((pixels - low) * scale).astype(np.uint8)
    # Each level once (a table of at most 65,536 rows), not each pixel: ten times faster.
    table = np.rint(np.arange(int(high) - int(low) + 1) * scale).astype(np.uint8)
    return table[np.subtract(pixels, low, dtype=np.intp)]


def clipped(dataset: Dataset, pixels: np.ndarray, dtype: type[np.integer]) -> np.ndarray:
    """Stored values cut to the range of ``dtype`` (``image-uint8`` and friends)."""
    if is_color(displayable(dataset, pixels)):
        raise NotDecodable("only a grayscale image can be read as integers: ask for /preview")
    limits = np.iinfo(dtype)
    return np.clip(pixels, limits.min, limits.max).astype(dtype)


@dataclass(frozen=True)
class Rendering:
    """The arguments of ``/rendered``: a window (centre, width) and a size to fit in."""

    center: float | None = None
    width: float | None = None
    max_width: int = 0
    max_height: int = 0
    smooth: bool = False


def rendered(dataset: Dataset, pixels: np.ndarray, options: Rendering) -> np.ndarray:
    """Rescaled, windowed (the request's window, the file's, or the whole range), resized."""
    pixels = displayable(dataset, pixels)
    if is_color(pixels):
        image = _color_8bit(dataset, pixels)
    else:
        values = apply_rescale(pixels.astype(np.float32), dataset)
        center, width = _window(dataset, options)
        low = center - width / 2
        image = _monochrome1(dataset, np.floor(np.clip((values - low) * (255 / width), 0, 255))
                             .astype(np.uint8))
    return _resized(image, options)


def _window(dataset: Dataset, options: Rendering) -> tuple[float, float]:
    center, width = options.center, options.width
    if center is None or width is None:
        stored_center, stored_width = (_first(dataset.get(k)) for k in
                                       ("WindowCenter", "WindowWidth"))
        center = stored_center if center is None else center
        width = stored_width if width is None else width
    if center is None or width is None or width <= 0:
        low, high = _stored_range(dataset)
        center, width = (low + high) / 2, high - low
    return center, max(width, 1e-6)


def _stored_range(dataset: Dataset) -> tuple[float, float]:
    """What the stored values can span after the rescale, from BitsStored and the sign."""
    bits = int(dataset.get("BitsStored") or dataset.get("BitsAllocated") or 8)
    signed = dataset.get("PixelRepresentation") == 1
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1))) if signed else (0, 1 << bits)
    ends = apply_rescale(np.array([low, high], dtype=np.float64), dataset)
    return float(ends.min()), float(ends.max())


def _first(value: object) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value[0] if isinstance(value, list | tuple | MultiValue)
                     else value)
    except (TypeError, ValueError):
        return None


def _monochrome1(dataset: Dataset, image: np.ndarray) -> np.ndarray:
    return 255 - image if dataset.get("PhotometricInterpretation") == "MONOCHROME1" else image


def _color_8bit(dataset: Dataset, pixels: np.ndarray) -> np.ndarray:
    bits = int(dataset.get("BitsStored") or 8)
    return (pixels >> max(bits - 8, 0)).astype(np.uint8) if pixels.dtype != np.uint8 else pixels


def _resized(image: np.ndarray, options: Rendering) -> np.ndarray:
    """Fit within the requested width and/or height, keeping the aspect ratio."""
    rows, columns = image.shape[:2]
    scales = [s for s in (options.max_width / columns if options.max_width else 0,
                          options.max_height / rows if options.max_height else 0) if s]
    if not scales:
        return image
    scale = min(scales)
    size = (max(1, round(columns * scale)), max(1, round(rows * scale)))
    method = Image.Resampling.BILINEAR if options.smooth else Image.Resampling.NEAREST
    return np.asarray(Image.fromarray(image).resize(size, method))


def encode_image(image: np.ndarray, image_format: str, quality: int = 90) -> bytes:
    """PNG (8 or 16 bits, the bits of the array kept) or JPEG (8 bits only)."""
    if image_format == "JPEG" and image.dtype != np.uint8:
        raise NotDecodable("JPEG holds 8-bit images only: ask for image/png")
    if image.dtype == np.int16:  # PNG has no signed samples: two's complement, as Orthanc
        image = image.view(np.uint16)
    if image_format == "PAM":
        return _pam(image)
    buffer = io.BytesIO()
    picture = Image.fromarray(image)
    # zlib's run-length strategy after PNG's row filters: faster than the default deflate
    # (a 512×512 CT frame in 7 ms instead of 9, 10 instead of 22 for noise) and no larger.
    options = ({"quality": quality} if image_format == "JPEG"
               else {"compress_level": 1, "compress_type": zlib.Z_RLE})
    picture.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _pam(image: np.ndarray) -> bytes:
    """Netpbm's PAM, which Pillow does not write: a text header, then big endian samples."""
    rows, columns = image.shape[:2]
    depth = image.shape[2] if image.ndim == 3 else 1
    header = (f"P7\nWIDTH {columns}\nHEIGHT {rows}\nDEPTH {depth}\n"
              f"MAXVAL {np.iinfo(image.dtype).max}\n"
              f"TUPLTYPE {'RGB' if depth == 3 else 'GRAYSCALE'}\nENDHDR\n")
    return header.encode() + image.astype(image.dtype.newbyteorder(">")).tobytes()


def npy(array: np.ndarray, *, compress: bool) -> bytes:
    """A ``.npy`` file, or a ``.npz`` holding it as ``arr_0``."""
    buffer = io.BytesIO()
    if compress:
        np.savez_compressed(buffer, array)
    else:
        np.save(buffer, array)
    return buffer.getvalue()


def numpy_values(dataset: Dataset, frames: np.ndarray, *, rescale: bool) -> np.ndarray:
    """(frames, rows, columns, channels); grayscale rescaled to float32 when asked."""
    if frames.ndim == 3:
        frames = frames[..., np.newaxis]
        if rescale:
            return apply_rescale(frames.astype(np.float32), dataset).astype(np.float32)
    return frames


def matlab(pixels: np.ndarray) -> str:
    """A grayscale frame as an Octave/MATLAB expression for ``eval()``."""
    if is_color(pixels):
        raise NotDecodable("only grayscale frames are exported for MATLAB")
    rows = " ; ".join(" ".join(str(v) for v in row) for row in pixels.tolist())
    return f"double([ {rows} ])"
