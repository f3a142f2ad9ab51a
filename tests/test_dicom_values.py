"""Values read straight from raw bytes are the strings pydicom's decoding gives.

Ingest reads the main tags of plain ASCII text from the raw bytes (``tag_string``) and
leaves every other value to pydicom; the index must hold the same strings either way
(``test_roundtrip.py`` checks the main tags of every pydicom test file too).
"""

from __future__ import annotations

import copy
import warnings

from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from lanthorn.dicom import element_string, tag_string

TAG = Tag(0x00204000)
#: What text values are made of, padding, other whitespace and the value separator
#: included.
ALPHABET = " \0\t\n\\^=.-+:/_abceEXYZ0129"
TEXT_VRS = ("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM",
            "UC", "UI", "UT")


def _with_raw(vr: str, value: bytes) -> Dataset:
    dataset = Dataset()
    dataset[TAG] = RawDataElement(TAG, vr, len(value), value, 0, False, True)  # type: ignore[assignment]
    return dataset


def _decoded_string(dataset: Dataset, tag: int) -> str:
    """What pydicom's decoding gives, on a copy (decoding replaces the raw element)."""
    return element_string(copy.deepcopy(dataset)[tag]) or ""


@settings(max_examples=400, deadline=None)
@given(vr=st.sampled_from(TEXT_VRS), text=st.text(ALPHABET, max_size=24))
def test_a_raw_text_value_reads_as_pydicom_decodes_it(vr: str, text: str) -> None:
    dataset = _with_raw(vr, text.encode("ascii"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about values invalid for the VR
        assert tag_string(dataset, TAG) == _decoded_string(dataset, TAG)


#: Decimal and integer strings as scanners write them, padding around, valid or not.
NUMBER = r" ?[+-]?[0-9]{0,3}\.?[0-9]{0,2}([eE][+-]?[0-9])? ?\x00?"
NUMBERS = st.lists(st.from_regex(NUMBER, fullmatch=True), min_size=1, max_size=3).map("\\".join)


@settings(max_examples=400, deadline=None)
@given(vr=st.sampled_from(("DS", "IS")), text=NUMBERS)
def test_a_raw_number_reads_as_pydicom_decodes_it(vr: str, text: str) -> None:
    dataset = _with_raw(vr, text.encode("ascii"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert tag_string(dataset, TAG) == _decoded_string(dataset, TAG)
