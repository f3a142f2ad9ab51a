"""``POST /tools/create-dicom``: a new instance from JSON tags, with an image or a PDF.

The instance is built with pydicom and stored through the one ingest path, like any
upload. ``Content`` is a data URI (PNG or JPEG image, PDF), or a list of them for a
series; ``Parent`` copies the modules of a patient, study or series.
"""

from __future__ import annotations

import base64
import binascii
import copy
import io
import json
import re
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR, private_dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..dicom import BINARY_VRS
from ..dimse.find import CHARACTER_SETS, UTF8
from ..errors import BadRequest, UnknownResource
from ..model import MODULE_TAGS, Level, parse_tag
from ..requested import FLOAT_VRS, INTEGER_VRS, first_header
from ..transcode import write
from ..types import Origin, PluginRoute, permitted
from .common import answer, json_body, server_of

if TYPE_CHECKING:
    from ..server import Server

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
DATA_URI = re.compile(r"^data:([^;,]*)(;base64)?,(.*)$", re.S)
#: The UIDs that identify the new instance and its parents: only with ``Force``.
IDENTIFYING = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
PARENT_LEVELS = {Level.PATIENT: (Level.PATIENT,), Level.STUDY: (Level.PATIENT, Level.STUDY),
                 Level.SERIES: (Level.PATIENT, Level.STUDY, Level.SERIES)}


async def create_dicom(request: Request) -> Response:
    body = json_body(await request.body())
    if not isinstance(body, dict):
        raise BadRequest("The body must contain a JSON object")
    origin = Origin("RestApi", remote_ip=request.client.host if request.client else "")
    return await run_in_threadpool(_create, server_of(request), body, origin)


def _create(server: Server, body: dict[str, Any], origin: Origin) -> Response:
    tags = body.get("Tags", {})
    content = body.get("Content")
    if not isinstance(tags, dict):
        raise BadRequest('"Tags" must be a JSON object')
    force = body.get("Force", False) is True
    base = _parent_dataset(server, body.get("Parent"), tags, force)
    _set_tags(server, base, tags, str(body.get("PrivateCreator") or ""),
              body.get("InterpretBinaryTags", True) is not False, force)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):  # shared by a series
        if keyword not in base:
            setattr(base, keyword, generate_uid())
    contents = content if isinstance(content, list) else [content]
    if not contents:
        raise BadRequest('"Content" is an empty list')
    if len(contents) > 1 and "SOPInstanceUID" in base:
        raise BadRequest("A series of several instances cannot share one SOPInstanceUID")
    stored = []
    for number, item in enumerate(contents, start=1):
        dataset = _instance(base, item, number if len(contents) > 1 else None)
        stored.append(server.ingest.store(write(dataset), origin))
    if isinstance(content, list):
        series = stored[0].public_ids[2]
        return answer({"ID": series, "Path": f"/series/{series}", "Status": "Success"})
    return answer(stored[0].as_json())


def _parent_dataset(server: Server, parent: Any, tags: dict[str, Any], force: bool) -> Dataset:
    """The modules of the parent resource, or a new patient (the JSON may name it)."""
    dataset = Dataset()
    if parent is None:
        return dataset
    resource = server.index.lookup(parent) if isinstance(parent, str) else None
    if resource is None or resource.level == Level.INSTANCE:
        raise UnknownResource(f"no patient, study or series has the ID {parent}")
    header = first_header(server, resource.id)
    if header is None:
        raise UnknownResource(f"the parent {parent} has no instance")
    copied = [tag for level in PARENT_LEVELS[resource.level] for tag in MODULE_TAGS[level]]
    for tag in copied:
        if tag in header:
            dataset[tag] = header[tag]
    overridden = [k for k in tags if _tag(k) in copied]
    if overridden and not force:
        raise BadRequest(f"{', '.join(overridden)} belong to the parent's modules: use "
                         '"Force" to change them')
    if "SpecificCharacterSet" in header:
        dataset.SpecificCharacterSet = header.SpecificCharacterSet
    return dataset


def _set_tags(server: Server, dataset: Dataset, tags: dict[str, Any], creator: str,
              binary: bool, force: bool) -> None:
    identifying = {_tag(k) for k in IDENTIFYING}
    if not force and (named := [k for k in tags if _tag(k) in identifying]):
        raise BadRequest(f'setting {", ".join(named)} needs "Force": true')
    if "SpecificCharacterSet" not in tags and "SpecificCharacterSet" not in dataset:
        dataset.SpecificCharacterSet = _character_set(server, tags)
    _add_all(dataset, tags, creator, binary)


def _add_all(dataset: Dataset, tags: dict[str, Any], creator: str, binary: bool) -> None:
    """Tags into a dataset; a private tag gets its ``PrivateCreator`` element too."""
    for key, value in tags.items():
        tag = _tag(key)
        if _is_private(tag) and creator:
            creator_tag = (tag & 0xFFFF0000) | (tag & 0xFF00) >> 8
            dataset.setdefault(creator_tag, DataElement(creator_tag, "LO", creator))
        dataset.add(_element(tag, value, creator, binary))


def _is_private(tag: int) -> bool:
    return bool(tag >> 16 & 1) and tag & 0xFFFF >= 0x1000


def _character_set(server: Server, tags: dict[str, Any]) -> str:
    """The ``DefaultEncoding``'s term when it can spell every value, else UTF-8."""
    term = CHARACTER_SETS.get(server.config["DefaultEncoding"], UTF8)
    try:
        json.dumps(tags, ensure_ascii=False).encode(python_encoding.get(term, "utf-8"))
    except UnicodeEncodeError:
        return UTF8
    return term


def _tag(key: str) -> int:
    try:
        return parse_tag(key)
    except ValueError:
        raise BadRequest(f'unknown DICOM tag "{key}"') from None


def _element(tag: int, value: Any, creator: str, binary: bool) -> DataElement:
    vr = _vr(tag, creator)
    if vr == "SQ":
        if not isinstance(value, list) or not all(isinstance(i, dict) for i in value):
            raise BadRequest(f"{tag:08X}: a sequence is a list of JSON objects")
        items = []
        for item in value:
            dataset = Dataset()
            _add_all(dataset, item, creator, binary)
            items.append(dataset)
        return DataElement(tag, vr, items)
    if not isinstance(value, str):
        raise BadRequest(f"{tag:08X}: the value must be a string")
    if binary and (uri := DATA_URI.match(value)):
        return DataElement(tag, "OB" if vr not in BINARY_VRS else vr, _data(uri))
    return DataElement(tag, vr, _typed(tag, vr, value))


def _vr(tag: int, creator: str) -> str:
    try:
        if _is_private(tag):
            return private_dictionary_VR(tag, creator) if creator else "UN"
        vr = dictionary_VR(tag)
    except KeyError:
        return "LO" if tag >> 16 & 1 else "UN"
    return vr.split(" or ")[0]


def _typed(tag: int, vr: str, value: str) -> Any:
    """Numbers for binary numeric VRs; text as given otherwise (pydicom splits on "\\")."""
    if vr not in INTEGER_VRS | FLOAT_VRS:
        return value if vr not in BINARY_VRS else value.encode()
    convert = int if vr in INTEGER_VRS else float
    try:
        numbers = [convert(v) for v in value.split("\\") if v.strip()]
    except ValueError:
        raise BadRequest(f'{tag:08X}: "{value}" is not a {vr} number') from None
    return numbers[0] if len(numbers) == 1 else numbers


def _data(uri: re.Match[str]) -> bytes:
    try:
        return base64.b64decode(uri[3], validate=True) if uri[2] else uri[3].encode()
    except binascii.Error:
        raise BadRequest("a data URI holds invalid base64") from None


def _instance(base: Dataset, content: Any, number: int | None) -> Dataset:
    """One new instance: the base's tags, new UIDs, dates, and the content."""
    dataset = copy.deepcopy(base)  # small: tags only
    now = time.localtime()
    date, clock = time.strftime("%Y%m%d", now), time.strftime("%H%M%S", now)
    for prefix in ("Study", "Series", "Content", "InstanceCreation", "Acquisition"):
        if f"{prefix}Date" not in dataset:
            setattr(dataset, f"{prefix}Date", date)
            setattr(dataset, f"{prefix}Time", clock)
    if "SOPInstanceUID" not in dataset:
        dataset.SOPInstanceUID = generate_uid()
    if number is not None:
        dataset.InstanceNumber = number
    if content is not None:
        if not isinstance(content, str) or not (uri := DATA_URI.match(content)):
            raise BadRequest('"Content" must be a data URI (or a list of them)')
        _content(dataset, uri[1].lower(), _data(uri))
    dataset.setdefault("SOPClassUID", SECONDARY_CAPTURE)
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return dataset


def _content(dataset: Dataset, media_type: str, data: bytes) -> None:
    if media_type == "application/pdf":
        if not data.startswith(b"%PDF"):
            raise BadRequest("the PDF content does not start with %PDF")
        dataset.setdefault("SOPClassUID", ENCAPSULATED_PDF)
        dataset.setdefault("Modality", "OT")
        dataset.ConversionType = "WSD"
        dataset.MIMETypeOfEncapsulatedDocument = "application/pdf"
        dataset.EncapsulatedDocument = data + b"\0" * (len(data) % 2)
        return
    if media_type not in ("image/png", "image/jpeg"):
        raise BadRequest(f'cannot embed "{media_type}": give a PNG, a JPEG or a PDF')
    try:
        picture = Image.open(io.BytesIO(data))
        picture.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise BadRequest(f"the image content cannot be read: {exc}") from None
    _pixels(dataset, _array(picture))


def _array(picture: Image.Image) -> np.ndarray:
    """8 or 16-bit grayscale, or 8-bit RGB (alpha and palettes are flattened)."""
    if picture.mode in ("I;16", "I;16B", "I"):
        return np.asarray(picture).astype(np.uint16)
    if picture.mode not in ("L", "RGB"):
        picture = picture.convert("L" if picture.mode in ("1", "LA") else "RGB")
    return np.asarray(picture)


def _pixels(dataset: Dataset, pixels: np.ndarray) -> None:
    color = pixels.ndim == 3
    dataset.Rows, dataset.Columns = pixels.shape[:2]
    dataset.SamplesPerPixel = 3 if color else 1
    dataset.PhotometricInterpretation = "RGB" if color else "MONOCHROME2"
    if color:
        dataset.PlanarConfiguration = 0
    bits = pixels.dtype.itemsize * 8
    dataset.BitsAllocated = dataset.BitsStored = bits
    dataset.HighBit = bits - 1
    dataset.PixelRepresentation = 0
    dataset.add(DataElement(0x7FE00010, "OW" if bits > 8 else "OB",
                            pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()))


def routes() -> list[PluginRoute]:
    return permitted("write", Route("/tools/create-dicom", create_dicom, methods=["POST"]))
