"""Shared by the core tests: new instances built from pydicom's CT_small.dcm, and a
snapshot of what a refused upload must leave unchanged."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

CT_SMALL = get_testdata_file("CT_small.dcm")

MakeInstance = Callable[..., bytes]


def _ct_instance(**tags: object) -> bytes:
    """CT_small.dcm with new Study/Series/SOP Instance UIDs, then ``tags`` set by keyword.

    A value of ``None`` removes the element. Each call is a new instance in a new
    series of a new study, unless the caller passes the UIDs to share.
    """
    dataset = pydicom.dcmread(CT_SMALL)
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    for keyword, value in tags.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.get("SOPInstanceUID", "")
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


@pytest.fixture
def ct_instance() -> MakeInstance:
    """Build the bytes of a new CT instance: ``ct_instance(PatientName="DOE^JOHN")``."""
    return _ct_instance


State = Callable[[], tuple[object, ...]]


@pytest.fixture
def server_state(lanthorn_client: Any, lanthorn_config: Any) -> State:
    """What a refused upload must leave unchanged: statistics, stored files, change log.

    The storage area's ``tmp/`` folder is left out: unfinished writes live there.
    """
    storage = Path(lanthorn_config["StorageDirectory"])

    def state() -> tuple[object, ...]:
        files = sorted(str(p.relative_to(storage)) for p in storage.rglob("*")
                       if p.is_file() and p.relative_to(storage).parts[0] != "tmp")
        return (lanthorn_client.get("/statistics").json(), files,
                lanthorn_client.get("/changes?limit=10000").json())

    return state
