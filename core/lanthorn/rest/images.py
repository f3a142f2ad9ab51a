"""Pixels over REST: previews, rendered frames, integer images, numpy, MATLAB, raw
frames and encapsulated PDF, at Orthanc's paths.

Frames are decoded through ``lanthorn.pixels`` (the ``decode_frame`` hook); the image
routes share one handler, told apart by the name of the operation in the path.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    JPEG2000MC,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..dicom import read_header
from ..errors import BadRequest, InexistentItem, NotAcceptable, NotDecodable
from ..ingest import DICOM_ATTACHMENT
from ..model import Level
from ..pixels import (
    IMAGE_FORMATS,
    Rendering,
    clipped,
    decode_all,
    decode_frame,
    encode_image,
    matlab,
    npy,
    numpy_values,
    preview,
    raw_frame,
    rendered,
)
from ..storage import read_all
from ..types import PluginRoute, permitted
from .common import answer, flag, integer, resource_of, server_of, text
from .tools import ordered_instances

if TYPE_CHECKING:
    from ..index.records import Resource
    from ..server import Server

#: The operations on a frame, as ``GET /instances/{id}/frames/{frame}`` lists them.
FRAME_OPERATIONS = ("image-int16", "image-uint16", "image-uint8", "matlab", "numpy",
                    "preview", "raw", "raw.gz", "rendered")
RAW_MEDIA_TYPES = {JPEGBaseline8Bit: "image/jpeg", JPEGExtended12Bit: "image/jpeg",
                   JPEG2000Lossless: "image/jp2", JPEG2000: "image/jp2",
                   JPEG2000MCLossless: "image/jp2", JPEG2000MC: "image/jp2"}
PDF = "application/pdf"

Picture = Callable[[Request, Dataset, np.ndarray], np.ndarray]


def _rendered(request: Request, dataset: Dataset, pixels: np.ndarray) -> np.ndarray:
    options = Rendering(center=_number(request, "window-center"),
                        width=_number(request, "window-width"),
                        max_width=integer(request, "width"), max_height=integer(request, "height"),
                        smooth=flag(request, "smooth"))
    return rendered(dataset, pixels, options)


#: How each image operation turns a decoded frame into the picture it answers.
PICTURES: dict[str, Picture] = {
    "preview": lambda _request, dataset, pixels: preview(dataset, pixels),
    "rendered": _rendered,
    "image-uint8": lambda _request, dataset, pixels: clipped(dataset, pixels, np.uint8),
    "image-uint16": lambda _request, dataset, pixels: clipped(dataset, pixels, np.uint16),
    "image-int16": lambda _request, dataset, pixels: clipped(dataset, pixels, np.int16),
}


def image(operation: str) -> Callable[[Request], Response]:
    """``/instances/{id}[/frames/{frame}]/<operation>`` as PNG or JPEG (``Accept``)."""

    def endpoint(request: Request) -> Response:
        image_format, media_type = _accepted(request)
        quality = _quality(request)
        server, dataset, frame = _frame_of(request)
        try:
            picture = PICTURES[operation](request, dataset, decode_frame(server, dataset, frame))
            return Response(encode_image(picture, image_format, quality), media_type=media_type)
        except NotDecodable:
            if flag(request, "returnUnsupportedImage"):
                return Response(_unsupported_image(), media_type="image/png")
            raise

    return endpoint


def load_dataset(server: Server, instance: Resource) -> Dataset:
    """The stored file of an instance, parsed (pixel data included)."""
    attachment = server.index.attachment(instance.id, DICOM_ATTACHMENT)
    if attachment is None:
        raise InexistentItem("this instance has no DICOM file")
    data = read_all(server.storage, attachment.uuid, attachment.compression)
    return pydicom.dcmread(io.BytesIO(data))


def _frame_of(request: Request) -> tuple[Server, Dataset, int]:
    server = server_of(request)
    dataset = load_dataset(server, resource_of(request, Level.INSTANCE))
    return server, dataset, _frame_number(request)


def _frame_number(request: Request) -> int:
    """The frame in the path (0 when there is none); not a number: 404, as in Orthanc."""
    text = request.path_params.get("frame", "0")
    if not (text.isascii() and text.isdigit()):
        raise InexistentItem(f'no frame "{text}": frames are numbered from 0')
    return int(text)


def _accepted(request: Request) -> tuple[str, str]:
    """The first format the client accepts (PNG for ``*/*``); 406 when none."""
    accepted = [part.split(";")[0].strip().lower()
                for part in request.headers.get("accept", "").split(",") if part.strip()]
    for media_type in accepted or ["image/png"]:
        if media_type in IMAGE_FORMATS:
            return IMAGE_FORMATS[media_type], media_type
        if media_type in ("*/*", "image/*"):
            return "PNG", "image/png"
    raise NotAcceptable(f"cannot answer {', '.join(accepted)}: ask for "
                        + " or ".join(IMAGE_FORMATS))


def _quality(request: Request) -> int:
    quality = integer(request, "quality", 90)
    if not 1 <= quality <= 100:
        raise BadRequest('the argument "quality" must be between 1 and 100')
    return quality


def _number(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise BadRequest(f'the argument "{name}" must be a number') from None


def _unsupported_image() -> bytes:
    """The placeholder of ``?returnUnsupportedImage``: a plain grey square."""
    return encode_image(np.full((64, 64), 128, dtype=np.uint8), "PNG")


def frame_operations(request: Request) -> Response:
    resource_of(request, Level.INSTANCE)  # 404 for an unknown instance
    return answer(list(FRAME_OPERATIONS))


def instance_numpy(request: Request) -> Response:
    """(frames, rows, columns, channels) of one instance, or of one frame without the
    first dimension."""
    server, dataset, frame = _frame_of(request)
    if "frame" in request.path_params:
        values = numpy_values(dataset, decode_frame(server, dataset, frame)[np.newaxis],
                              rescale=flag(request, "rescale", True))[0]
    else:
        values = numpy_values(dataset, decode_all(server, dataset),
                              rescale=flag(request, "rescale", True))
    return _npy_response(request, values)


def series_numpy(request: Request) -> Response:
    """Every frame of the series' instances, in the order of ``ordered-slices``."""
    server = server_of(request)
    series = resource_of(request, Level.SERIES)
    arrays = []
    for instance in ordered_instances(server.index, series.id):
        dataset = load_dataset(server, instance)
        arrays.append(numpy_values(dataset, decode_all(server, dataset),
                                   rescale=flag(request, "rescale", True)))
    if not arrays:
        raise InexistentItem("this series has no instance")
    try:
        return _npy_response(request, np.concatenate(arrays))
    except ValueError:
        raise BadRequest("the instances of this series differ in size or colour") from None


def _npy_response(request: Request, values: np.ndarray) -> Response:
    return Response(npy(values, compress=flag(request, "compress")),
                    media_type="application/octet-stream")


def instance_matlab(request: Request) -> Response:
    server, dataset, frame = _frame_of(request)
    return text(matlab(decode_frame(server, dataset, frame)))


def raw(request: Request) -> Response:
    """A frame's bytes as stored, bypassing decoding; out of range is a 400, as Orthanc."""
    _, dataset, frame = _frame_of(request)
    try:
        data = raw_frame(dataset, frame)
    except InexistentItem as exc:
        raise BadRequest(exc.message) from None
    syntax = dataset.file_meta.TransferSyntaxUID
    if request.url.path.endswith(".gz"):
        return Response(gzip.compress(data), media_type="application/gzip",
                        headers={"Content-Encoding": "gzip"})
    return Response(data, media_type=RAW_MEDIA_TYPES.get(syntax, "application/octet-stream"))


def pdf(request: Request) -> Response:
    """The encapsulated PDF document (read from the stored header: no file is opened)."""
    server = server_of(request)
    header = read_header(server.index.header(resource_of(request, Level.INSTANCE).id))
    mime = str(header.get("MIMETypeOfEncapsulatedDocument", "")).strip()
    if mime != PDF or "EncapsulatedDocument" not in header:
        raise InexistentItem("this instance does not hold an encapsulated PDF document")
    document = header.EncapsulatedDocument
    # A document of odd length was padded with a NUL to fit DICOM: not part of the PDF.
    return Response(document[:-1] if document.endswith(b"%%EOF\n\0") else document,
                    media_type=PDF)


def routes() -> list[PluginRoute]:
    frame = "/instances/{id}/frames/{frame}"
    listed = [Route(f"/instances/{{id}}/{name}", image(name), methods=["GET"])
              for name in PICTURES]
    listed += [Route(f"{frame}/{name}", image(name), methods=["GET"]) for name in PICTURES]
    return permitted(
        "read",
        *listed,
        Route(frame, frame_operations, methods=["GET"]),
        Route(f"{frame}/raw", raw, methods=["GET"]),
        Route(f"{frame}/raw.gz", raw, methods=["GET"]),
        Route("/instances/{id}/numpy", instance_numpy, methods=["GET"]),
        Route(f"{frame}/numpy", instance_numpy, methods=["GET"]),
        Route("/series/{id}/numpy", series_numpy, methods=["GET"]),
        Route("/instances/{id}/matlab", instance_matlab, methods=["GET"]),
        Route(f"{frame}/matlab", instance_matlab, methods=["GET"]),
        Route("/instances/{id}/pdf", pdf, methods=["GET"]),
    )
