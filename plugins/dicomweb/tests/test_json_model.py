"""The fast DICOM JSON writer gives pydicom's answer on every file pydicom ships, except
where PS3.18 F.2 is stricter: padding is trimmed from each value of a multi-valued
string and empty values are null."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from lanthorn_dicomweb.json_model import dataset_json

from lanthorn.dicom import pack_header, parse_instance, read_header
from lanthorn.errors import BadFileFormat


def _storable(path: Path) -> bool:
    try:
        parse_instance(path.read_bytes())
    except BadFileFormat:
        return False
    return True


TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
#: Its NumberOfFrames is "1A": stored, but pydicom's to_json_dict fails on it.
MALFORMED_NUMBER = TEST_FILES / "badVR.dcm"
#: pydicom's test files that Lanthorn stores (the others are refused at ingest).
FILES = [p for p in sorted(TEST_FILES.glob("*.dcm")) if p != MALFORMED_NUMBER and _storable(p)]


def _standard(element: dict[str, Any]) -> dict[str, Any]:
    """pydicom's output with F.2's rules for multi-valued strings, and without the
    elements that are not attributes (file meta, group lengths, padding)."""
    element = dict(element)
    if "BulkDataURI" in element:
        element["BulkDataURI"] = "bulk"
    if element["vr"] == "SQ":
        items = [_dataset(item) for item in element.get("Value", [])]
        element.pop("Value", None)
        if items:
            element["Value"] = items
    elif isinstance(element.get("Value"), list) and element["vr"] not in ("PN",):
        element["Value"] = [(v.strip(" ") or None) if isinstance(v, str) else v
                            for v in element["Value"]]
    return element


def _dataset(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _standard(v) for k, v in item.items()
            if not (int(k, 16) >> 16 == 2 or int(k, 16) & 0xFFFF == 0 or k == "FFFCFFFC")}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_same_json_as_pydicom(path: Path) -> None:
    parsed = parse_instance(path.read_bytes())
    header = read_header(pack_header(parsed.header))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's own warnings on odd test files
        reference = read_header(pack_header(parsed.header)).to_json_dict(
            bulk_data_threshold=1024, bulk_data_element_handler=lambda element: "bulk")
        ours = dataset_json(header, lambda where: "bulk")
    assert json.dumps(ours, sort_keys=True) == json.dumps(_dataset(reference), sort_keys=True)


def test_a_malformed_number_is_null_and_the_rest_as_pydicom_gives_it() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about "1A" when reading it
        header = read_header(pack_header(parse_instance(MALFORMED_NUMBER.read_bytes()).header))
        ours = dataset_json(header, lambda where: "bulk")
        assert ours.pop("00280008") == {"vr": "IS", "Value": [None]}
        del header.NumberOfFrames
        reference = header.to_json_dict(bulk_data_threshold=1024,
                                        bulk_data_element_handler=lambda element: "bulk")
    assert json.dumps(ours, sort_keys=True) == json.dumps(_dataset(reference), sort_keys=True)
