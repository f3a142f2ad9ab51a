"""Rendered and thumbnail resources (PS3.18 8.3.5) and WADO-URI pictures, drawn by the
core's pixel service (``lanthorn.pixels``: decoding through the ``decode_frame`` hook,
rescale, windowing, resizing) and encoded as JPEG or PNG.

``rendered`` is offered for instances and frames (the first frame of a list), and for
studies and series as a multipart of every instance's rendering, each drawn as it is
sent; a ``thumbnail`` also for a series or a study, from its middle instance.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from python_multipart.multipart import parse_options_header
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lanthorn import BadRequest, LanthornError, Level, Server
from lanthorn.ingest import DICOM_ATTACHMENT
from lanthorn.pixels import Rendering, decode_frame, encode_image, rendered
from lanthorn.storage import read_all

from .multipart import Part, new_boundary, related_type, write_parts
from .resources import instances, path_level, path_uids
from .responses import NotAcceptable

log = logging.getLogger(__name__)

#: What a client may ask for, and PS3.18's default first.
MEDIA_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}
THUMBNAIL_SIZE = 128


def rendered_resource(request: Request, server: Server) -> Response:
    """``.../instances/{instance}[/frames/{frames}]/rendered``."""
    ids = instances(server, Level.INSTANCE, path_uids(request))
    frame = _first_frame(request.path_params.get("frames", "1"))
    return _picture(request, server, ids[0], frame, _rendering(request.query_params))


def rendered_instances(request: Request, server: Server) -> Response:
    """``/studies/{study}[/series/{series}]/rendered``: multipart/related, one part per
    instance (its first frame), rendered only when the client reads that far. Instances
    that cannot be rendered (no pixels, no codec) are left out, as the answer has begun."""
    ids = instances(server, path_level(request), path_uids(request))
    media_type = _accepted(request)
    options = _rendering(request.query_params)
    quality = _quality(request.query_params.get("quality"))

    def parts() -> Iterator[Part]:
        for instance_id in ids:
            try:
                picture = _draw(server, instance_id, 0, options)
            except LanthornError as exc:
                log.warning("rendered: instance %d left out: %s", instance_id, exc)
                continue
            yield media_type, [encode_image(picture, MEDIA_TYPES[media_type], quality)]

    boundary = new_boundary()
    return StreamingResponse(write_parts(parts(), boundary),
                             media_type=related_type(media_type, boundary))


def _rendering(params: QueryParams) -> Rendering:
    """``window`` and ``viewport`` of a rendered resource."""
    center, width = _window(params.get("window"))
    max_width, max_height = _viewport(params.get("viewport"), 0)
    return Rendering(center=center, width=width, max_width=max_width, max_height=max_height,
                     smooth=True)


def thumbnail(request: Request, server: Server) -> Response:
    """``.../thumbnail`` of a study, series, instance or frame: a small rendering."""
    ids = instances(server, path_level(request), path_uids(request))
    frame = _first_frame(request.path_params.get("frames", "1"))
    max_width, max_height = _viewport(request.query_params.get("viewport"), THUMBNAIL_SIZE)
    return _picture(request, server, ids[len(ids) // 2], frame,
                    Rendering(max_width=max_width, max_height=max_height, smooth=True))


def wado_uri_picture(request: Request, server: Server, instance_id: int,
                     media_type: str) -> Response:
    """WADO-URI's JPEG or PNG: ``windowCenter``/``windowWidth``, ``rows``/``columns`` (a
    size to fit in), ``frameNumber`` (from 1), ``imageQuality``."""
    params = request.query_params
    center, width = (_optional_number(params, name) for name in ("windowCenter", "windowWidth"))
    if (center is None) != (width is None):
        raise BadRequest("windowCenter and windowWidth go together")
    rows, columns = (int(_optional_number(params, name) or 0) for name in ("rows", "columns"))
    options = Rendering(center=center, width=width, max_width=columns, max_height=rows,
                        smooth=True)
    frame = _first_frame(params.get("frameNumber", "1"))
    quality = _quality(params.get("imageQuality"))
    picture = _draw(server, instance_id, frame, options)
    return Response(encode_image(picture, MEDIA_TYPES[media_type], quality),
                    media_type=media_type)


def _picture(request: Request, server: Server, instance_id: int, frame: int,
             options: Rendering) -> Response:
    media_type = _accepted(request)
    quality = _quality(request.query_params.get("quality"))
    picture = _draw(server, instance_id, frame, options)
    return Response(encode_image(picture, MEDIA_TYPES[media_type], quality),
                    media_type=media_type)


def _draw(server: Server, instance_id: int, frame: int, options: Rendering) -> np.ndarray:
    dataset = _stored(server, instance_id)
    return rendered(dataset, decode_frame(server, dataset, frame), options)


def _stored(server: Server, instance_id: int) -> Dataset:
    attachment = server.index.attachment(instance_id, DICOM_ATTACHMENT)
    if attachment is None:
        raise BadRequest("this instance has no DICOM file")
    return pydicom.dcmread(io.BytesIO(read_all(server.storage, attachment.uuid,
                                               attachment.compression)))


def _accepted(request: Request) -> str:
    """The first of JPEG and PNG the client accepts, alone or as the ``type`` of
    multipart/related (JPEG, the standard's default, for ``*/*`` or no ``Accept``); 406
    otherwise."""
    asked = [_media_type(part) for part in request.headers.get("accept", "").split(",")
             if part.strip()]
    for media_type in asked or ["image/jpeg"]:
        if media_type in MEDIA_TYPES:
            return media_type
        if media_type in ("*/*", "image/*"):
            return "image/jpeg"
    raise NotAcceptable(f"a rendering is image/jpeg or image/png, not {', '.join(asked)}")


def _media_type(accepted: str) -> str:
    media_type, parameters = parse_options_header(accepted.strip())
    if media_type == b"multipart/related":
        return parameters.get(b"type", b"image/jpeg").decode("latin-1").lower()
    return media_type.decode("latin-1").lower()


def _first_frame(text: str) -> int:
    """The first of a frame list (numbered from 1, as in DICOMweb) as a 0-based index."""
    first = text.split(",")[0].strip()
    if not first.isdigit() or int(first) < 1:
        raise BadRequest(f'frames are numbered from 1, not "{text}"')
    return int(first) - 1


def _window(text: str | None) -> tuple[float | None, float | None]:
    """``window=center,width[,function]``: only the linear function is supported."""
    if not text:
        return None, None
    parts = text.split(",")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2].strip().lower() != "linear"):
        raise BadRequest('"window" is center,width[,linear]')
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise BadRequest('"window" is center,width[,linear] with numbers') from None


def _viewport(text: str | None, default: int) -> tuple[int, int]:
    """``viewport=width,height`` (a source region after them is not supported)."""
    if not text:
        return default, default
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise BadRequest('"viewport" is width,height in pixels')
    return int(parts[0]), int(parts[1])


def _quality(text: str | None) -> int:
    if text is None or text == "":
        return 90
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise BadRequest('"quality" is a number from 1 to 100')
    return int(text)


def _optional_number(params: QueryParams, name: str) -> float | None:
    text = params.get(name)
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise BadRequest(f'"{name}" must be a number') from None
