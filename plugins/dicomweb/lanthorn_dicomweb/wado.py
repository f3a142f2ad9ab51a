"""WADO-RS (PS3.18 10.4): instances, metadata, bulk data and frames.

Instances stream from the storage area one after the other. Metadata comes from the
headers the index saved at ingest, never from the files; bulk data and frames read
only the byte ranges they need.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pydicom.encaps
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lanthorn import BadRequest, Level, Server, UnknownResource
from lanthorn.dicom import read_header
from lanthorn.errors import InexistentItem, NotDecodable
from lanthorn.index.records import Attachment
from lanthorn.ingest import DICOM_ATTACHMENT
from lanthorn.rest.common import byte_range
from lanthorn.rest.streaming import streamed
from lanthorn.storage import read_ahead_files, read_chunks
from lanthorn.transcode import WRITABLE, check_syntax, transcode

from .json_model import BINARY_VRS, PIXEL_DATA, dataset_json
from .multipart import new_boundary, related_type, write_parts
from .options import Options
from .resources import base_url, instances, path_level, path_uids, retrieve_url
from .responses import ANY_SYNTAX, NotAcceptable, Wanted, choose, json_array, require_json, wanted

DICOM = "application/dicom"
OCTETS = "application/octet-stream"
SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0"
#: Media types of compressed frames (PS3.18 Table 8.7.3-4).
FRAME_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx", "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc", "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc", "1.2.840.10008.1.2.5": "image/dicom-rle",
}
#: Explicit VRs whose element header has a 4-byte length (PS3.5 7.1.2).
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}


# -- instances ------------------------------------------------------------------------


def retrieve(request: Request, server: Server) -> Response:
    """Every instance of the study, series or instance, as multipart application/dicom:
    the stored files, or transcoded one by one when the client asks for another syntax;
    read ahead of the socket by a thread of the answer's own (``lanthorn.rest.streaming``)."""
    ids = instances(server, path_level(request), path_uids(request))
    wants = wanted(request, DICOM)
    files = stored_files(server, ids)
    targets = [writable(choose(wants, DICOM, syntax)) for _, syntax in files]
    sent = {target or syntax for (_, syntax), target in zip(files, targets, strict=True)}
    boundary = new_boundary()
    stored = read_ahead_files(server.storage, [attachment for attachment, _ in files])
    parts = (dicom_part(server, blocks, target or syntax, target is not None)
             for blocks, (_, syntax), target in zip(stored, files, targets, strict=True))
    media_type = related_type(DICOM, boundary, sent.pop() if len(sent) == 1 else "")
    return streamed(write_parts(parts, boundary), media_type=media_type)


def writable(syntax: str | None) -> str | None:
    """A transfer syntax the core's transcoding can write; 406 naming it otherwise."""
    if syntax is not None and check_syntax(syntax) not in WRITABLE:
        raise NotAcceptable(f"cannot transcode to {syntax}; possible: {', '.join(WRITABLE)}")
    return syntax


def dicom_part(server: Server, blocks: Iterable[bytes], syntax: str,
               transcoded: bool) -> tuple[str, Iterable[bytes]]:
    """One instance: its stored bytes streamed, or (lazily) transcoded to ``syntax``."""
    if transcoded:
        blocks = _transcoded(server, blocks, syntax)
    return f"{DICOM}; transfer-syntax={syntax}", blocks


def _transcoded(server: Server, blocks: Iterable[bytes], syntax: str) -> Iterator[bytes]:
    yield transcode(server, b"".join(blocks), [syntax])


def stored_files(server: Server, ids: Sequence[int]) -> list[tuple[Attachment, str]]:
    """Each instance's file and transfer syntax, read in batches before streaming."""
    result = []
    for start in range(0, len(ids), server.index.ID_BATCH):
        for info in server.index.describe(ids[start:start + server.index.ID_BATCH]):
            attachment = info.attachments.get(DICOM_ATTACHMENT)
            if attachment is None:
                raise InexistentItem(f"instance {info.resource.public_id} has no DICOM file")
            result.append((attachment, info.metadata.get("TransferSyntax", "")))
    return result


# -- metadata --------------------------------------------------------------------------


def metadata(request: Request, server: Server, options: Options) -> Response:
    """The DICOM JSON of every instance, streamed: kept JSON where there is some, else
    rendered from the saved header (and kept, with ``EnableMetadataCache``)."""
    require_json(request)
    ids = instances(server, path_level(request), path_uids(request))
    base = json.dumps(base_url(request, options))[1:-1].encode()

    def items() -> Iterator[bytes]:
        for start in range(0, len(ids), server.index.ID_BATCH):
            batch = ids[start:start + server.index.ID_BATCH]
            kept = server.index.instance_json(batch) if options.metadata_cache else {}
            rendered = _render(server, [i for i in batch if i not in kept])
            if options.metadata_cache:
                server.index.keep_json({i: zlib.compress(j, 1) for i, j in rendered.items()})
            for instance in batch:
                text = zlib.decompress(kept[instance]) if instance in kept \
                    else rendered.get(instance)
                if text is not None:  # None: deleted since the look-up
                    yield text.replace(BASE_MARKER, base)

    return json_array(items())


#: Stands for the base URL in kept JSON (clients reach the server under several names).
BASE_MARKER = b"\\u0000lanthorn-base\\u0000"


def _render(server: Server, ids: list[int]) -> dict[int, bytes]:
    """DICOM JSON of instances from their saved headers, with BASE_MARKER as base URL."""
    if not ids:
        return {}
    headers = server.index.headers(ids)
    marker = json.loads(b'"' + BASE_MARKER + b'"')
    return {info.resource.id: json.dumps(
                instance_json(read_header(headers[info.resource.id]), info.metadata, marker),
                ensure_ascii=False, separators=(",", ":")).encode()
            for info in server.index.describe(ids) if info.resource.id in headers}


def instance_json(header: Dataset, metadata: dict[str, str], base: str) -> dict[str, Any]:
    """One instance's metadata; the pixel data (cut from the header) as a BulkDataURI."""
    url = retrieve_url(base, str(header.StudyInstanceUID), str(header.SeriesInstanceUID),
                       str(header.SOPInstanceUID))
    result = dataset_json(header, lambda path: f"{url}/bulk/{path}")
    if "PixelDataOffset" in metadata:
        encapsulated = UID(metadata.get("TransferSyntax", "")).is_encapsulated
        wide = int(header.get("BitsAllocated", 8) or 8) > 8
        result[f"{PIXEL_DATA:08X}"] = {"vr": "OW" if wide and not encapsulated else "OB",
                                       "BulkDataURI": f"{url}/bulk/{PIXEL_DATA:08x}"}
    return result


# -- bulk data and frames -------------------------------------------------------------


class _Instance:
    """One stored instance: its file, header and where its pixel data lies in the file."""

    def __init__(self, server: Server, request: Request) -> None:
        self.server = server
        (self.id,) = instances(server, Level.INSTANCE, path_uids(request))[:1]
        attachment = server.index.attachment(self.id, DICOM_ATTACHMENT)
        if attachment is None:
            raise InexistentItem("this instance has no DICOM file")
        self.file = attachment
        self.metadata = server.index.metadata(self.id)
        self.syntax = self.metadata.get("TransferSyntax", "")
        self.header = read_header(server.index.header(self.id))

    def read(self, start: int, end: int) -> bytes:
        return b"".join(read_chunks(self.server.storage, self.file.uuid, self.file.compression,
                                    start, end))

    def pixel_span(self) -> tuple[int, int, bool]:
        """Start and end of the pixel data value in the file, and whether encapsulated."""
        if "PixelDataOffset" not in self.metadata:
            raise InexistentItem("this instance has no pixel data")
        offset = int(self.metadata["PixelDataOffset"])
        implicit = UID(self.syntax).is_implicit_VR
        head = self.read(offset, offset + 12)
        little = UID(self.syntax).is_little_endian
        if implicit:
            size, start = struct.unpack("<I" if little else ">I", head[4:8])[0], offset + 8
        elif head[4:6] in LONG_VRS:
            size, start = struct.unpack("<I" if little else ">I", head[8:12])[0], offset + 12
        else:
            size, start = struct.unpack("<H" if little else ">H", head[6:8])[0], offset + 8
        if size != 0xFFFFFFFF:
            return start, start + size, False
        value = self.read(start, self.file.uncompressed_size)
        return start, start + value.rfind(SEQUENCE_DELIMITER), True


def bulk(request: Request, server: Server) -> Response:
    """A bulk data value (any element the metadata gave a BulkDataURI), with Range."""
    instance = _Instance(server, request)
    path = request.path_params["path"].strip("/").lower()
    if path == f"{PIXEL_DATA:08x}":
        start, end, _ = instance.pixel_span()
        size = end - start
        low, high = byte_range(request.headers.get("range"), size)
        blocks: Any = read_chunks(server.storage, instance.file.uuid, instance.file.compression,
                                  start + low, start + high)
    else:
        value = _element_bytes(instance.header, path)
        size = len(value)
        low, high = byte_range(request.headers.get("range"), size)
        blocks = [value[low:high]]
    boundary = new_boundary()
    status, headers = 200, {}
    if "range" in request.headers:
        status, headers = 206, {"Content-Range": f"bytes {low}-{high - 1}/{size}"}
    return StreamingResponse(write_parts([(OCTETS, blocks)], boundary), status_code=status,
                             media_type=related_type(OCTETS, boundary), headers=headers)


def _element_bytes(dataset: Dataset, path: str) -> bytes:
    """The raw value at ``tag/item/tag...`` in the header; 404 naming the path if absent."""
    steps = path.split("/")
    node: Dataset = dataset
    for position in range(0, len(steps), 2):
        try:
            tag = int(steps[position], 16)
        except ValueError:
            raise InexistentItem(f'"{path}" is not a path of tags and item numbers') from None
        if tag not in node:
            raise InexistentItem(f'no element "{path}" in this instance')
        if position + 1 == len(steps):
            raw, element = node.get_item(tag), node[tag]
            if element.VR not in BINARY_VRS or not isinstance(element.value, bytes):
                raise InexistentItem(f'"{path}" is not bulk data')
            return raw.value if isinstance(raw, RawDataElement) else element.value
        items = node[tag].value
        index = steps[position + 1]
        if not index.isdigit() or int(index) >= len(items or []):
            raise InexistentItem(f'no item "{index}" in "{steps[position]}"')
        node = items[int(index)]
    raise InexistentItem(f'"{path}" names a sequence item, not an element')


def frames(request: Request, server: Server) -> Response:
    """Frames (1-based numbers, "1,3,5"): as stored (native bytes or compressed
    fragments), or through the core's transcoding when the client asks for another media
    type or transfer syntax; 406 when no codec can write what it accepts."""
    instance = _Instance(server, request)
    count = int(instance.header.get("NumberOfFrames", 1) or 1)
    numbers = _frame_numbers(request.path_params["frames"], count)
    syntax = _frame_syntax(wanted(request, OCTETS), instance.syntax)
    if syntax is None:
        syntax = instance.syntax
        start, end, encapsulated = instance.pixel_span()
        contents = _frame_contents(instance.read, start, end, encapsulated, numbers, count,
                                   instance.header)
    else:
        contents = _transcoded_frames(server, instance, syntax, numbers, count)
    media_type = frame_type(syntax)
    boundary = new_boundary()
    return StreamingResponse(
        write_parts(((f"{media_type}; transfer-syntax={syntax}", c) for c in contents),
                    boundary),
        media_type=related_type(media_type, boundary, syntax))


#: The transfer syntax a frame media type means when Accept names none (PS3.18 8.7.3-5).
FRAME_DEFAULT_SYNTAXES = {
    OCTETS: ExplicitVRLittleEndian, "image/jpeg": JPEGBaseline8Bit, "image/jls": JPEGLSLossless,
    "image/jp2": JPEG2000Lossless, "image/dicom-rle": RLELossless,
}


def frame_type(syntax: str) -> str:
    """The media type of frames in ``syntax``: native ones are application/octet-stream."""
    return FRAME_TYPES.get(syntax, OCTETS) if UID(syntax).is_encapsulated else OCTETS


def _frame_syntax(wants: list[Wanted], stored: str) -> str | None:
    """None to send the stored frames, or the syntax to transcode them to: the first
    acceptable one that the core can write; 406 when there is none."""
    for want in wants:
        if want.media_type in ("*/*", frame_type(stored)) \
                and want.transfer_syntax in (ANY_SYNTAX, stored):
            return None
        syntax = FRAME_DEFAULT_SYNTAXES.get(want.media_type) \
            if want.transfer_syntax == ANY_SYNTAX else want.transfer_syntax
        if syntax in WRITABLE and want.media_type in ("*/*", frame_type(syntax)):
            return syntax
    asked = ", ".join(f"{w.media_type} ({w.transfer_syntax})" for w in wants)
    raise NotAcceptable(f"the frames are stored in {stored}; asked for {asked}; possible "
                        f"transfer syntaxes: {stored}, {', '.join(WRITABLE)}")


def _transcoded_frames(server: Server, instance: _Instance, syntax: str, numbers: list[int],
                       count: int) -> Iterable[Iterable[bytes]]:
    """The frames after the core's transcoding of the instance; 406 if it cannot."""
    try:
        data = transcode(server, instance.read(0, instance.file.uncompressed_size), [syntax])
    except NotDecodable as exc:
        raise NotAcceptable(f"the frames cannot be sent in {syntax}: {exc}") from None
    dataset = pydicom.dcmread(io.BytesIO(data))
    value = dataset.PixelData
    return _frame_contents(lambda start, end: value[start:end], 0, len(value),
                           UID(syntax).is_encapsulated, numbers, count, dataset)


def _frame_contents(read: Callable[[int, int], bytes], start: int, end: int,
                    encapsulated: bool, numbers: list[int], count: int,
                    header: Dataset) -> Iterable[Iterable[bytes]]:
    """The frames of a pixel data value lying at [start, end) of what ``read`` reads;
    native frames are read one by one as the answer is sent."""
    if encapsulated:
        value = io.BytesIO(read(start, end))
        return [[pydicom.encaps.get_frame(value, n - 1, number_of_frames=count)]
                for n in numbers]
    size = _frame_size(header)
    if start + size * count > end:
        raise InexistentItem(f"the pixel data is shorter than {count} frames")
    return ([read(start + (n - 1) * size, start + n * size)] for n in numbers)


def _frame_numbers(text: str, count: int) -> list[int]:
    numbers = []
    for item in text.split(","):
        if not item.strip().isdigit() or int(item) < 1:
            raise BadRequest(f'frame numbers are positive integers separated by ",": "{text}"')
        if int(item) > count:
            raise UnknownResource(f"frame {int(item)} does not exist: the instance has {count}")
        numbers.append(int(item))
    return numbers


def _frame_size(header: Dataset) -> int:
    bits = int(header.Rows) * int(header.Columns) * int(header.get("SamplesPerPixel", 1)) \
        * int(header.BitsAllocated)
    if bits % 8:
        raise InexistentItem("frames of this instance do not start on byte boundaries")
    return bits // 8
