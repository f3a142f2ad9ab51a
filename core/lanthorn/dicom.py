"""Reading DICOM bytes with pydicom, and rendering datasets as Orthanc's JSON.

Parsing happens once per instance at ingest. What the index keeps of an instance is
its *header*: the file's bytes with the pixel data element cut out, compressed. That
keeps every other element exact (no re-encoding) and makes ``/tags`` and C-FIND
answers cheap without reading the file again.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

import pydicom
from pydicom.charset import default_encoding
from pydicom.datadict import private_dictionary_description
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.hooks import hooks
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.valuerep import IS, VR, DSfloat
from pydicom.values import converters

from .errors import BadFileFormat
from .model import IDENTIFIER_KEYWORDS, Level, MainTags, format_tag

PIXEL_DATA = 0x7FE00010
#: A set: ``tag in`` a tuple costs one ``BaseTag.__eq__`` per member, on every element.
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, PIXEL_DATA})
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
SOP_CLASS_UID = 0x00080016
MEDIA_STORAGE_SOP_CLASS_UID = 0x00020002
_IDENTIFIERS = tuple(IDENTIFIER_KEYWORDS[level] for level in Level)
_IDENTIFIER_TAGS = tuple(Tag(keyword) for keyword in _IDENTIFIERS)
#: Dataset trailing padding: not an attribute, so never shown (as in Orthanc).
TRAILING_PADDING = 0xFFFCFFFC
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"})
NUMERIC_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "US or SS"})
#: VRs whose ASCII values pydicom decodes by splitting on "\" (but the single-valued
#: ones) and stripping trailing padding, nothing else.
_PLAIN_TEXT_VRS = frozenset({"AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC",
                             "UT"})
_SINGLE_VALUED_VRS = frozenset({"LT", "ST", "UT"})
#: Decimal strings as PS3.5 defines them, spaces around: pydicom keeps such a value as
#: sent (Orthanc's string is it without the spaces); what else it does with another
#: value depends on what Python makes of it, so another value keeps pydicom's decoding.
_NUMBER_TEXT = {"DS": re.compile(r" *([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?) *"),
                "IS": re.compile(r" *([+-]?\d+) *")}
#: Orthanc shows longer values as "TooLong" in /tags.
MAX_TAG_LENGTH = 256
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0"
UNDEFINED_LENGTH = 0xFFFFFFFF
#: The tag of the File Meta Information Group Length, first after the preamble: (0002,0000).
_GROUP_LENGTH = b"\2\0\0\0"
#: Where the File Meta Information starts: after the preamble and "DICM".
_META_START = 132
_GROUP_LENGTH_TAG = 0x00020000
TRANSFER_SYNTAX_UID = 0x00020010
#: How pydicom reads a data set in these transfer syntaxes (implicit VR, little endian);
#: in any other but deflate, explicit VR little endian.
_ENCODINGS = {pydicom.uid.ImplicitVRLittleEndian: (True, True),
              pydicom.uid.ExplicitVRBigEndian: (False, False)}
#: Real instances nest a few levels; reading one back costs several stack frames a level.
MAX_SEQUENCE_DEPTH = 64
#: The VRs pydicom decodes, each with the size its values' length must be a multiple
#: of: the bytes per value of binary numbers (the ambiguous VRs may become US or SS once
#: their dataset tells which), 1 for the others.
_VALUE_SIZES = dict.fromkeys(converters, 1) | {
    vr: struct.calcsize("<" + c[1]) for vr, c in converters.items() if isinstance(c, tuple)
} | dict.fromkeys((VR.US_SS, VR.US_OW, VR.US_SS_OW), 2)
#: Raw VRs that pydicom looks up before decoding: none given (implicit VR), or UN.
_LOOKED_UP = (None, "UN")


def file_meta_information(sop_class: str, sop_instance: str, transfer_syntax: str,
                          implementation: tuple[str, str]) -> bytes:
    """Preamble, prefix and File Meta Information for a data set received over DICOM
    (``implementation``: class UID and version name), encoded here: pydicom's writer
    took 0.6 ms of each C-STORE."""
    elements = b"".join((
        _meta_element(0x0001, b"OB", b"\0\1"),
        _meta_element(0x0002, b"UI", even_value(sop_class, b"\0")),
        _meta_element(0x0003, b"UI", even_value(sop_instance, b"\0")),
        _meta_element(0x0010, b"UI", even_value(transfer_syntax, b"\0")),
        _meta_element(0x0012, b"UI", even_value(implementation[0], b"\0")),
        _meta_element(0x0013, b"SH", even_value(implementation[1], b" ")),
    ))
    length = _meta_element(0x0000, b"UL", struct.pack("<I", len(elements)))
    return b"".join((bytes(128), b"DICM", length, elements))


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    """An element of group 0002 (always explicit VR little endian)."""
    if vr == b"OB":
        return struct.pack("<HH2s2xI", 0x0002, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def even_value(text: str, padding: bytes) -> bytes:
    """ASCII text padded to an even length, as DICOM values are."""
    value = text.encode("ascii")
    return value + padding if len(value) % 2 else value


@dataclass(frozen=True)
class ParsedInstance:
    """One instance read from bytes, with what ingest needs and nothing computed twice."""

    data: bytes
    dataset: Dataset
    uids: tuple[str, str, str, str]  # PatientID, StudyInstanceUID, SeriesInstanceUID, SOP
    transfer_syntax: str
    sop_class: str
    pixel_data_offset: int | None
    header: bytes  # the file without its pixel data element (not yet compressed)


def parse_instance(data: bytes) -> ParsedInstance:
    """Parse and validate; raise BadFileFormat with a message naming the problem.

    Nothing else may escape, or a corrupt upload becomes an internal error: pydicom
    raises whatever its decoders hit on malformed bytes (its own exceptions, struct and
    OS errors, a RecursionError on deep nesting, a warning that the process's filters
    turn into an exception), and all of it means the file cannot be read. The outcome
    must not depend on those filters either: pydicom only *warns* about an element that
    never ends and keeps what it read, so truncation is checked here.
    """
    if not data:
        raise BadFileFormat("Received an empty DICOM file")
    try:
        return _parse(data)
    except BadFileFormat:
        raise
    except RecursionError:  # pydicom reads nested sequences of undefined length recursively
        raise BadFileFormat(f"Sequences are nested more than {MAX_SEQUENCE_DEPTH} levels "
                            "deep") from None
    except Exception as exc:  # any failure of pydicom: see above
        raise BadFileFormat(
            f"Cannot parse an invalid DICOM file (size: {len(data)} bytes): {exc}"
        ) from None


def _parse(data: bytes) -> ParsedInstance:
    _check_group_length(data)
    dataset, end = read_file(data)
    if end < len(data):  # pydicom warned that an element never ends, and stopped
        raise BadFileFormat(f"The file is truncated (reading stopped at byte {end} "
                            f"of {len(data)})")
    meta = dataset.file_meta
    transfer_syntax = present_string(meta, TRANSFER_SYNTAX_UID)
    # Positions in a deflated file are those of the inflated stream: keep it whole.
    deflated = transfer_syntax == pydicom.uid.DeflatedExplicitVRLittleEndian
    pixel_offset, pixel_end = (None, 0) if deflated else \
        _pixel_span(dataset, data, transfer_syntax)
    uids = _identifiers(dataset)  # before anything decodes them: that hides a VR of UN
    _check_elements(dataset)
    if not transfer_syntax:
        raise BadFileFormat("The file meta information has no TransferSyntaxUID")
    media_sop_class = present_string(meta, MEDIA_STORAGE_SOP_CLASS_UID)
    if media_sop_class == DICOMDIR_SOP_CLASS:
        raise BadFileFormat("A DICOMDIR cannot be stored: import the files it refers to")
    if not all(uids[1:]):
        missing = [k for k, v in zip(_IDENTIFIERS[1:], uids[1:], strict=True) if not v]
        raise BadFileFormat(f"The file has no {', '.join(missing)}: it cannot be indexed")
    header = data if pixel_offset is None else data[:pixel_offset] + data[pixel_end:]
    return ParsedInstance(
        data=data,
        dataset=dataset,
        uids=uids,
        transfer_syntax=transfer_syntax,
        sop_class=present_string(dataset, SOP_CLASS_UID) or media_sop_class,
        pixel_data_offset=pixel_offset,
        header=header,
    )


def read_file(data: bytes) -> tuple[FileDataset, int]:
    """What ``pydicom.dcmread`` reads of a whole file, and where its reading stopped.

    A file as ingest nearly always meets it (File Meta Information in explicit VR with
    its group length, a transfer syntax that needs no inflating, no command set) is
    read with pydicom's own ``read_dataset``, as ``dcmread`` would: its checks and
    guesses for other files were a third of reading a small one. Any other file goes
    through ``dcmread``.
    """
    stream = io.BytesIO(data)
    dataset = read_plain_file(stream, data)
    if dataset is None:
        stream.seek(0)
        dataset = pydicom.dcmread(stream)
    return dataset, stream.tell()


def read_plain_file(stream: io.BytesIO, data: bytes) -> FileDataset | None:
    """``read_file``'s reading of a plain file, or None (``stream`` anywhere) for another."""
    if data[128:138] != b"DICM" + _GROUP_LENGTH + b"UL":
        return None
    stream.seek(_META_START)
    meta = read_dataset(stream, is_implicit_VR=False, is_little_endian=True,
                        stop_when=_past_file_meta)
    group_length = meta.get_item(_GROUP_LENGTH_TAG)
    syntax = meta.get_item(TRANSFER_SYNTAX_UID)
    end = stream.tell()
    if not isinstance(group_length, RawDataElement) or group_length.length != 4 \
            or end != _META_START + 12 + struct.unpack("<I", group_length.value)[0] \
            or not isinstance(syntax, RawDataElement) or syntax.VR != "UI" \
            or any(element.VR not in converters for element in meta.values()) \
            or data[end:end + 2] in (b"", b"\0\0"):  # no data set, or a command set
        return None
    uid = tag_string(meta, TRANSFER_SYNTAX_UID)  # as ``_parse`` reads it, as pydicom does
    if uid == pydicom.uid.DeflatedExplicitVRLittleEndian \
            or uid in pydicom.uid.PrivateTransferSyntaxes:
        return None
    implicit, little = _ENCODINGS.get(uid, (False, True))  # others: explicit VR LE
    dataset = read_dataset(stream, implicit, little)
    file_meta = FileMetaDataset(meta)
    file_meta.set_original_encoding(False, True, default_encoding)
    whole = FileDataset(stream, dataset, data[:128], file_meta, implicit, little)
    whole.set_original_encoding(implicit, little, dataset._character_set)
    return whole


def _past_file_meta(tag: int, _vr: str | None, _length: int) -> bool:
    return tag >> 16 != 2


def _check_group_length(data: bytes) -> None:
    """Refuse a File Meta Information Group Length that is not a UL, before pydicom.

    pydicom formats that value into a log message, logged or not; as a sequence its text
    doubles with each level of nesting, and 22 KB of input exhaust the memory.
    """
    if data[128:136] == b"DICM" + _GROUP_LENGTH and data[136:138] not in (b"UL", b"\4\0"):
        raise BadFileFormat("The File Meta Information Group Length (0002,0000) is not a UL")


def _check_elements(dataset: Dataset) -> None:
    """Refuse what pydicom could not decode, decoding only the sequences.

    Other values are decoded when something reads them (the index's few tags at ingest,
    ``/tags`` when asked): decoding all of them here was 40% of parsing a small file,
    70% of parsing a scanner's. Whatever the warning filters, pydicom fails to decode a
    value only for an unknown VR or binary numbers whose length is not a multiple of
    their size, so those are checked on the raw elements. It reads a sequence's items
    only when decoding the sequence (or, for one of undefined length, with the file), so
    sequences are decoded here, their items checked alike and their depth bounded:
    reading a header back recurses once per level, so deeper nesting than
    MAX_SEQUENCE_DEPTH could be stored but not shown.
    """
    pending = [(dataset, 0)]
    while pending:
        current, depth = pending.pop()
        if depth > MAX_SEQUENCE_DEPTH:
            raise BadFileFormat(f"Sequences are nested more than {MAX_SEQUENCE_DEPTH} levels "
                                "deep")
        for element in list(current.values()):  # as stored: raw, or decoded already
            if isinstance(element, RawDataElement):
                vr = _looked_up_vr(element, current) if element.VR in _LOOKED_UP \
                    else element.VR
                if vr != "SQ" and (element.length != UNDEFINED_LENGTH or
                                   element.tag in PIXEL_TAGS):
                    size = _VALUE_SIZES.get(vr)
                    if size is None or element.length % size:
                        _refuse(element, vr)
                    continue
                element = current[element.tag]
            if element.VR == "SQ":
                pending += [(item, depth + 1) for item in element.value or []]


def _looked_up_vr(raw: RawDataElement, dataset: Dataset) -> str:
    """The VR pydicom decodes ``raw`` with when the file does not give it (implicit VR,
    or UN, which pydicom replaces with a known VR)."""
    found: dict[str, Any] = {}
    hooks.raw_element_vr(raw, found, ds=dataset)
    return found["VR"]


def _refuse(raw: RawDataElement, vr: str) -> NoReturn:
    if vr not in _VALUE_SIZES:
        raise BadFileFormat(f"Element {format_tag(raw.tag)} has an unknown VR ({vr!r})")
    raise BadFileFormat(f"Element {format_tag(raw.tag)} has {raw.length} bytes, not a "
                        f"multiple of {_VALUE_SIZES[vr]} for its VR {vr}")


def _identifiers(dataset: Dataset) -> tuple[str, str, str, str]:
    """The identifying values as Orthanc hashes them ("" when absent).

    Padding is stripped, except that Orthanc keeps the spaces of a value sent with the
    VR UN (``rtdose_rle.dcm``): IDs must match, so we do the same.
    """
    values = []
    for tag in _IDENTIFIER_TAGS:  # by tag: a keyword is looked up on every access
        raw = dataset.get_item(tag)
        if raw is None:
            values.append("")
        elif isinstance(raw, RawDataElement) and raw.VR == "UN":
            values.append((raw.value or b"").decode("latin-1").rstrip("\x00"))
        else:  # several values (a malformed file) are joined by "\", as Orthanc does
            values.append(tag_string(dataset, tag).strip(" \x00"))
    return tuple(values)  # type: ignore[return-value]


def _pixel_span(dataset: Dataset, data: bytes, syntax: str) -> tuple[int | None, int]:
    """Where the pixel data element starts and ends in ``data``; detects truncation."""
    raw_elements = list(dataset.values())  # as stored: nothing decoded
    _check_complete([r for r in raw_elements if isinstance(r, RawDataElement)], data)
    pixel = next((r for r in raw_elements if r.tag in PIXEL_TAGS), None)
    if not isinstance(pixel, RawDataElement):
        return None, 0
    implicit = pydicom.uid.UID(syntax).is_implicit_VR if syntax else False
    start = pixel.value_tell - (8 if implicit else 12)
    if pixel.length != UNDEFINED_LENGTH:
        return start, pixel.value_tell + pixel.length
    delimiter = data.find(_SEQUENCE_DELIMITER, pixel.value_tell + len(pixel.value or b""))
    if delimiter < 0:
        raise BadFileFormat("The file is truncated (the encapsulated pixel data never ends)")
    return start, delimiter + 8


def _check_complete(raw_elements: list[RawDataElement], data: bytes) -> None:
    """Refuse values that run past the end, and a file cut inside its last element header.

    pydicom ignores fewer than 8 trailing bytes, so a file cut inside a header would
    pass for a shorter valid one (without its pixel data, say); trailing zeros are
    padding, not a header.
    """
    for raw in raw_elements:
        if raw.length != UNDEFINED_LENGTH and raw.value_tell + raw.length > len(data):
            raise BadFileFormat(f"The file is truncated (element {format_tag(raw.tag)} "
                                f"needs {raw.length} bytes)")
    last = raw_elements[-1] if raw_elements else None
    end = last.value_tell + last.length if last and last.length != UNDEFINED_LENGTH else 0
    if 0 < len(data) - end < 8 and data[end:].strip(b"\0"):
        raise BadFileFormat("The file is truncated (it ends inside an element header)")


# -- headers kept by the index -------------------------------------------------------

def pack_header(header: bytes) -> bytes:
    return zlib.compress(header, 1)


def read_header(packed: bytes) -> Dataset:
    """The dataset of a stored header (file meta included, pixel data left out)."""
    return pydicom.dcmread(io.BytesIO(zlib.decompress(packed)))


def header_value(packed: bytes | None, tag: int) -> str | None:
    """One top-level value of a stored header as Orthanc's string, or None if absent."""
    if not packed:
        return None
    element = read_header(packed).get(tag)
    return None if element is None else element_string(element)


# -- values as Orthanc spells them ------------------------------------------------------

def element_string(element: DataElement, limit: int | None = None) -> str | None:
    """A non-sequence value as one string ("a\\b" for several); None for binary data."""
    if element.VR in BINARY_VRS or element.VR == "SQ":
        return None
    value = element.value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return None
    if isinstance(value, MultiValue | list | tuple):
        text = "\\".join([_scalar_string(v) for v in value])
    else:  # one value, as most are: no list to make and join
        text = _scalar_string(value)
    return text if limit is None or len(text) <= limit else None


def tag_string(dataset: Dataset, tag: int) -> str:
    """``element_string`` of a present element ("" for binary data), straight from its
    raw bytes when they are ASCII text whose decoding by pydicom (about 10 µs an
    element) ``_RAW_READERS`` repeats: most main tags."""
    return _stored_string(dataset, tag, dataset.get_item(tag))


def _stored_string(dataset: Dataset, tag: int, stored: DataElement | RawDataElement) -> str:
    """``tag_string`` given the element as ``dataset`` stores it (raw or decoded)."""
    if isinstance(stored, RawDataElement) and (reader := _RAW_READERS.get(stored.VR)):
        text = ascii_text(stored.value)
        value = None if text is None else reader(text)
        if value is not None:
            return value
    return element_string(dataset[tag]) or ""


def _padding(value: str) -> str:
    return value.rstrip(" \x00")


def _each(clean: Callable[[str], str | None]) -> Callable[[str], str | None]:
    """A reader of several values ("\\"-separated), each read by ``clean`` as pydicom
    does for the VR; None if ``clean`` cannot read one (pydicom's decoding then decides)."""

    def read(text: str) -> str | None:
        text = _padding(text)
        if "\\" not in text:  # one value, as nearly all are: no list to make and join
            return clean(text)
        values = [clean(part) for part in text.split("\\")]
        return None if None in values else "\\".join(values)  # type: ignore[arg-type]

    return read


def _number(pattern: re.Pattern[str]) -> Callable[[str], str | None]:
    """A decimal string without its spaces, or None if it is not a valid one."""

    def read(value: str) -> str | None:
        match = pattern.fullmatch(value)
        return None if match is None else match.group(1)

    return read


#: How a raw ASCII value of each VR reads as pydicom decodes it (a property test holds
#: them to it: ``tests/test_dicom_values.py``); other VRs are left to pydicom. Beyond
#: splitting and stripping padding, pydicom strips a UID of any whitespace and drops a
#: person name's empty trailing groups ("=").
_RAW_READERS: dict[str, Callable[[str], str | None]] = {
    **{vr: _padding if vr in _SINGLE_VALUED_VRS else _each(_padding) for vr in _PLAIN_TEXT_VRS},
    "UI": _each(lambda uid: _padding(uid.strip())),
    "PN": _each(lambda name: _padding(name.rstrip("="))),
    **{vr: _each(_number(pattern)) for vr, pattern in _NUMBER_TEXT.items()},
}


def present_string(dataset: Dataset, tag: int) -> str:
    """``tag_string`` of an element that may be absent ("")."""
    return tag_string(dataset, tag) if tag in dataset else ""


def ascii_text(value: bytes | None) -> str | None:
    """A raw text value that reads the same in every DICOM character set (ASCII without
    the escape sequences of ISO 2022), or None: then pydicom must decode it."""
    if value and value.isascii() and b"\x1b" not in value:
        return value.decode("ascii")
    return None


def _scalar_string(value: Any) -> str:
    if isinstance(value, DSfloat | IS):  # keep the decimal string as it was sent
        return str(getattr(value, "original_string", None) or value).strip(" \x00")
    if isinstance(value, float):  # FL/FD: 17 significant digits, as Orthanc prints them
        return format(value, ".17g")
    return str(value).rstrip(" \x00")


def main_tag_values(dataset: Dataset, main_tags: MainTags) -> dict[Level, dict[int, str]]:
    """The main DICOM tags present in the dataset, per level."""
    # The elements as stored, by plain int: a look-up by pydicom's tag (``get_item``,
    # ``tag in dataset``) compares tags in Python, about 1 µs each.
    stored = dict(zip(map(int, dataset.keys()), dataset.values(), strict=True))
    return {
        level: {tag: _stored_string(dataset, tag, stored[tag]) for tag in tags if tag in stored}
        for level, tags in main_tags.by_level.items()
    }


Mode = Literal["full", "short", "simplify"]


def dataset_json(dataset: Dataset, mode: Mode = "full", *, with_pixel_data: bool = False
                 ) -> dict[str, Any]:
    """Orthanc's rendering of a dataset: ``/tags``, ``?short`` or ``?simplify``."""
    result: dict[str, Any] = {}
    for element in dataset:
        if element.tag == TRAILING_PADDING:
            continue
        # Simplified keys are the names of the full form (private tags too, as in Orthanc).
        key = _element_name(element, dataset) if mode == "simplify" \
            else format_tag(element.tag)
        result[key] = _element_json(element, mode, dataset)
    if with_pixel_data:
        key = "PixelData" if mode == "simplify" else format_tag(PIXEL_DATA)
        result[key] = _element_json(DataElement(PIXEL_DATA, "OB", None), mode, dataset)
    return result


def _element_json(element: DataElement, mode: Mode, parent: Dataset) -> Any:
    if element.VR == "SQ":
        items = [dataset_json(item, mode) for item in element.value or []]
        value: Any = items
        kind = "Sequence"
    else:
        text = element_string(element)
        if text is None:
            value, kind = None, "Null"
        elif len(text) > MAX_TAG_LENGTH:
            value, kind = None, "TooLong"
        else:
            value, kind = text, "String"
    if mode != "full":
        return value
    described: dict[str, Any] = {"Name": _element_name(element, parent)}
    if element.tag.is_private and not element.tag.is_private_creator:
        creator = _private_creator(element, parent)
        if creator:
            described["PrivateCreator"] = creator
    described["Type"] = kind
    described["Value"] = value
    return described


def _element_name(element: DataElement, parent: Dataset) -> str:
    if not element.tag.is_private:
        return element.keyword or "Unknown Tag & Data"
    if element.tag.is_private_creator:
        return "PrivateCreator"
    creator = _private_creator(element, parent)
    try:
        description = private_dictionary_description(element.tag, creator or "")
    except KeyError:
        return "Unknown Tag & Data"
    return "".join(word[:1].upper() + word[1:] for word in description.replace("-", " ").split()
                   if word.isalnum())


def _private_creator(element: DataElement, parent: Dataset) -> str | None:
    creator_tag = (element.tag.group << 16) | (element.tag.element >> 8)
    creator = parent.get(creator_tag)
    return str(creator.value).strip() if creator is not None else None
