"""The DICOM JSON model (PS3.18 Annex F), written straight from the saved headers.

Series metadata renders every instance of a series, so this is the hot path of a viewer
opening a study. pydicom's ``to_json_dict`` first converts every raw element into a
typed ``DataElement`` (about 10 µs each); here the common values (ASCII text, binary
numbers, bulk data) go from the raw bytes to JSON directly, and anything unusual
(other character sets, implicit or ambiguous VRs, malformed numbers) goes through
pydicom's conversion, so the output is the same as pydicom's in every case.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from typing import Any

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from lanthorn.dicom import ascii_text

#: Binary values up to this many bytes are inlined (InlineBinary); longer ones are
#: replaced by a BulkDataURI (pydicom's default threshold, counted on the raw bytes).
BULK_THRESHOLD = 768
PIXEL_DATA = 0x7FE00010
TRAILING_PADDING = 0xFFFCFFFC
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
SINGLE_VALUED = frozenset({"LT", "ST", "UT", "UR"})
TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH",
                      "ST", "TM", "UC", "UI", "UR", "UT"})
#: Leading spaces are significant in these (PS3.5 6.2); others are stripped both ends.
KEEP_LEADING = frozenset({"LT", "ST", "UT", "UC", "UR"})
NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d",
                  "UV": "Q", "SV": "q"}

BulkUri = Callable[[str], str]  # the element's path ("0040a730/0/7fe00010") -> its URI
Json = dict[str, Any]


def dataset_json(dataset: Dataset, bulk_uri: BulkUri, path: str = "") -> dict[str, Json]:
    """A dataset as DICOM JSON; file meta, group lengths and padding are not attributes."""
    result: dict[str, Json] = {}
    for tag in sorted(dataset.keys()):  # noqa: SIM118 - tags, without converting elements
        if tag >> 16 == 2 or tag & 0xFFFF == 0 or tag == TRAILING_PADDING:
            continue
        where = f"{path}{tag:08x}"
        raw = dataset.get_item(tag)
        value = _fast(raw, bulk_uri, where) if isinstance(raw, RawDataElement) else None
        result[f"{tag:08X}"] = value if value is not None else \
            element_json(dataset[tag], bulk_uri, where)
    return result


def element_json(element: DataElement, bulk_uri: BulkUri, where: str) -> Json:
    """A converted element (the general case) as DICOM JSON."""
    vr = element.VR
    if vr == "SQ":
        items = [dataset_json(item, bulk_uri, f"{where}/{i}/")
                 for i, item in enumerate(element.value or [])]
        return {"vr": vr, "Value": items} if items else {"vr": vr}
    if vr in BINARY_VRS or " or " in vr:
        value = element.value
        if " or " in vr:
            vr = "OW" if isinstance(value, bytes) else vr.split(" or ")[0]
        if isinstance(value, bytes):
            return _binary(vr, value, bulk_uri, where)
    if element.is_empty:
        return {"vr": vr}
    values = list(element.value) if isinstance(element.value, MultiValue | list) \
        else [element.value]
    if vr == "PN":
        return {"vr": vr, "Value": [_person_name(str(v)) for v in values]}
    if vr == "AT":
        return {"vr": vr, "Value": [f"{v:08X}" for v in values]}
    if vr in ("IS", "DS") or vr in NUMBER_FORMATS:
        kind = float if vr in ("DS", "FL", "FD") else int
        return {"vr": vr, "Value": [_number(kind, v) for v in values]}
    return {"vr": vr, "Value": [None if v == "" else str(v) for v in values]}


def _number(kind: type[int] | type[float], value: Any) -> int | float | None:
    """A JSON number, or null for a value that is none: pydicom keeps a malformed IS or
    DS ("1A") as its text, which neither a JSON number nor a reader expecting one can
    take."""
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except ValueError:
        return None


def _fast(raw: RawDataElement, bulk_uri: BulkUri, where: str) -> Json | None:
    """The element from its raw bytes, or None when pydicom must convert it."""
    vr, value = raw.VR, raw.value
    if vr is None or value is None:
        return None
    if not value:
        return {"vr": vr} if vr != "SQ" and vr != "UN" else None
    if vr in BINARY_VRS and vr != "UN":
        return _binary(vr, value, bulk_uri, where)
    if vr in NUMBER_FORMATS:
        width = struct.calcsize(NUMBER_FORMATS[vr])
        if len(value) % width:
            return None
        order = "<" if raw.is_little_endian else ">"
        numbers = struct.unpack(f"{order}{len(value) // width}{NUMBER_FORMATS[vr]}", value)
        return {"vr": vr, "Value": list(numbers)}
    text = ascii_text(value) if vr in TEXT_VRS else None
    if text is None:
        return None
    parts = [text] if vr in SINGLE_VALUED else text.split("\\")
    parts = [p.rstrip(" \x00") if vr in KEEP_LEADING else p.strip(" \x00") for p in parts]
    if len(parts) == 1 and not parts[0]:
        return {"vr": vr}
    try:
        return {"vr": vr, "Value": _typed(vr, parts)}
    except ValueError:  # a malformed number: pydicom decides what it means
        return None


def _typed(vr: str, parts: list[str]) -> list[Any]:
    if vr == "PN":
        return [_person_name(p) if p else None for p in parts]
    if vr == "IS":
        return [int(_integer(p)) if p else None for p in parts]
    if vr == "DS":
        return [float(p) if p else None for p in parts]
    return [p if p else None for p in parts]


def _integer(text: str) -> int:
    """IS values such as "1.0" are integers written as decimals (pydicom accepts them)."""
    number = float(text)
    if number != int(number):
        raise ValueError(text)
    return int(number)


def _person_name(text: str) -> dict[str, str]:
    """PN as its component groups (Alphabetic, Ideographic, Phonetic)."""
    groups = text.split("=")
    names = ("Alphabetic", "Ideographic", "Phonetic")
    return {name: group for name, group in zip(names, groups, strict=False)}


def _binary(vr: str, value: bytes, bulk_uri: BulkUri, where: str) -> Json:
    if len(value) > BULK_THRESHOLD:
        return {"vr": vr, "BulkDataURI": bulk_uri(where)}
    return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}
