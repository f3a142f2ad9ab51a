"""Shared by the core tests: new instances built from pydicom's CT_small.dcm, a
snapshot of what a refused upload must leave unchanged, and a C-STORE peer that sends
files' bytes untouched."""

from __future__ import annotations

import io
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset, read_preamble
from pydicom.uid import generate_uid
from pynetdicom import AE, _config
from pynetdicom.association import Association

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


def split_file_meta(data: bytes) -> tuple[Dataset, int]:
    """The file meta information of a DICOM file, and where its data set starts.

    A C-STORE peer sends only the data set; the receiver writes its own file meta, so
    the data set is what must come back unchanged.
    """
    stream = io.BytesIO(data)
    read_preamble(stream, False)
    meta = read_dataset(stream, is_implicit_VR=False, is_little_endian=True,
                        stop_when=lambda tag, *_: tag.group != 2)
    return meta, stream.tell()


StoreScu = Callable[..., Association]


@pytest.fixture
def store_scu(monkeypatch: pytest.MonkeyPatch) -> Iterator[StoreScu]:
    """Open C-STORE associations: ``store_scu(port, (sop_class, syntax), ...)``.

    ``association.send_c_store(path)`` then sends the file's data set bytes as they are
    (pynetdicom's chunked mode: no decoding, no re-encoding), corrupt ones included.
    """
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    opened: list[Association] = []
    # pynetdicom forgets to close a socket whose peer is gone (its shutdown() fails
    # first): keep each one to close it here, or it warns when collected.
    sockets: list[socket.socket] = []

    def associate(port: int, *contexts: tuple[str, str]) -> Association:
        ae = AE(ae_title="RELIABILITY")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        for sop_class, syntax in contexts:
            ae.add_requested_context(sop_class, syntax)
        association = ae.associate("127.0.0.1", port, ae_title="LANTHORN")
        assert association.is_established, "the DICOM listener refused the association"
        opened.append(association)
        sockets.append(association.dul.socket.socket)
        return association

    yield associate
    for association in opened:
        if association.is_alive():
            association.abort()
    for sock in sockets:
        sock.close()
