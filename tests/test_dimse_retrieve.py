"""C-MOVE and C-GET SCP against real peers: DCMTK movescu/getscu, pynetdicom SCUs, and a
pynetdicom storage SCP as the move destination."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dimse_peers import (
    PEER_AET,
    SCU_AET,
    StoreSCP,
    dcmtk,
    listening,
    scu,
    store,
    tcp_nodelay,
)
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

import lanthorn
from lanthorn import Origin
from lanthorn.testing import free_port

pytestmark = pytest.mark.all_index_backends

MOVE = StudyRootQueryRetrieveInformationModelMove
GET = StudyRootQueryRetrieveInformationModelGet


@dataclass
class Setup:
    server: lanthorn.Server
    listener: Any
    port: int
    peer: StoreSCP
    study: str
    uids: list[str]  # SOP Instance UIDs of the study's three CT instances


@pytest.fixture
def peer(request: pytest.FixtureRequest) -> StoreSCP:
    """A new peer per test (parametrize ``peer`` indirectly with the syntaxes it accepts)."""
    return StoreSCP(syntaxes=getattr(request, "param", None))


@pytest.fixture
def lanthorn_config(lanthorn_config: lanthorn.config.Config, peer: StoreSCP
                    ) -> lanthorn.config.Config:
    return lanthorn_config.with_overrides(DicomBindAddress="127.0.0.1", DicomModalities={
        "scu": [SCU_AET, "127.0.0.1", 104],
        "peer": {"AET": PEER_AET, "Host": "127.0.0.1", "Port": peer.port},
        "down": ["DOWN", "127.0.0.1", free_port()]})


@pytest.fixture
def setup(lanthorn_server: lanthorn.Server, peer: StoreSCP) -> Iterator[Setup]:
    study, series = generate_uid(), generate_uid()
    uids = [store(lanthorn_server, PatientID="P1", StudyInstanceUID=study,
                  SeriesInstanceUID=series, InstanceNumber=n).SOPInstanceUID
            for n in (1, 2, 3)]
    store(lanthorn_server, PatientID="P2")  # another study, never sent
    with listening(lanthorn_server) as listener, peer.running():
        yield Setup(lanthorn_server, listener, lanthorn_server.config["DicomPort"], peer,
                    study, uids)


def study(uid: str) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = uid
    return identifier


def move(setup: Setup, identifier: Dataset, destination: str = PEER_AET
         ) -> list[tuple[int, Dataset, Dataset | None]]:
    with scu(setup.port, MOVE) as assoc:
        return [(status.Status, status, answer)
                for status, answer in assoc.send_c_move(identifier, destination, MOVE)]


def test_movescu_sends_the_study_to_the_destination(setup: Setup) -> None:
    done = dcmtk("movescu", setup.port, "-S", "-aem", PEER_AET, "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"StudyInstanceUID={setup.study}")
    assert done.returncode == 0, done.stderr
    assert "Received Final Move Response (Success)" in done.stderr
    assert sorted(r.sop_instance for r in setup.peer.received) == sorted(setup.uids)


def test_c_move_reports_pending_counts_and_uses_tcp_nodelay(setup: Setup) -> None:
    """The store association's socket is looked at while it is live, in the peer's handler."""
    setup.peer.on_store = lambda event: [
        tcp_nodelay(a) for a in setup.listener.ae.active_associations if a.is_requestor]
    responses = move(setup, study(setup.study))
    counts = [(s, st.NumberOfRemainingSuboperations, st.NumberOfCompletedSuboperations)
              for s, st, _ in responses]
    assert counts == [(0xFF00, 2, 1), (0xFF00, 1, 2), (0xFF00, 0, 3), (0x0000, 0, 3)]
    assert setup.peer.seen_during_store == [[True]] * 3


@pytest.mark.lanthorn_config(SynchronousCMove=False)
@pytest.mark.parametrize("peer", [[ImplicitVRLittleEndian]], ids=["implicit-peer"],
                         indirect=True)
def test_an_asynchronous_c_move_is_a_store_job(setup: Setup, rle_instance: str) -> None:
    """SynchronousCMove false: success at once, then the job sends (as Orthanc does),
    transcoding the RLE instance the peer refuses."""
    responses = move(setup, study(setup.study))
    assert [(s, st.get("NumberOfCompletedSuboperations", 0)) for s, st, _ in responses] == \
        [(0x0000, 0)]
    [job_id] = [job.id for job in setup.server.index.jobs.all()]
    deadline = time.monotonic() + 30
    while (job := setup.server.index.jobs.get(job_id)).state not in ("Success", "Failure"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    assert (job.job_type, job.state) == ("DicomModalityStore", "Success")
    assert sorted(r.sop_instance for r in setup.peer.received) == \
        sorted([*setup.uids, rle_instance])
    assert {r.transfer_syntax for r in setup.peer.received} == {ImplicitVRLittleEndian}
    assert {r.move_originator for r in setup.peer.received} == {SCU_AET}


def test_an_unknown_destination_is_refused(setup: Setup,
                                           caplog: pytest.LogCaptureFixture) -> None:
    done = dcmtk("movescu", setup.port, "-S", "-aem", "NOWHERE", "-k",
                 "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={setup.study}")
    assert "MoveDestinationUnknown" in done.stderr
    assert [s for s, _, _ in move(setup, study(setup.study), "NOWHERE")] == [0xA801]
    assert 'destination "NOWHERE" is not in DicomModalities' in caplog.text
    assert [s for s, _, _ in move(setup, study(setup.study), "DOWN")] == [0xA801]  # unreachable
    assert setup.peer.received == []


def test_a_retrieve_without_the_unique_key_of_its_level_sends_nothing(
        setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientID = "P1"
    [(status, _, _)] = move(setup, identifier)
    assert status == 0xC514  # unable to process
    assert "C-MOVE from TESTSCU failed: the identifier has no StudyInstanceUID" in caplog.text
    assert setup.peer.received == []
    with scu(setup.port, GET) as assoc:
        assert [s.Status for s, _ in assoc.send_c_get(identifier, GET)] == [0xC413]
    assert "C-GET from TESTSCU failed: the identifier has no StudyInstanceUID" in caplog.text


@pytest.fixture
def rle_instance(setup: Setup) -> str:
    """An RLE-compressed MR instance in the same study: stored as received."""
    dataset = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    dataset.PatientID, dataset.StudyInstanceUID = "P1", setup.study
    path = Path(setup.server.config["StorageDirectory"]).parent / "rle.dcm"
    dataset.save_as(path)
    setup.server.ingest.store(path.read_bytes(), Origin())
    return str(dataset.SOPInstanceUID)


@pytest.mark.parametrize(("allowed", "protocol"), [(True, True), (False, True), (True, False)],
                         ids=["transcoded", "modality-refuses", "server-refuses"])
def test_a_compressed_instance_the_destination_refuses_is_transcoded_if_allowed(
        setup: Setup, rle_instance: str, allowed: bool, protocol: bool,
        caplog: pytest.LogCaptureFixture) -> None:
    """The peer takes uncompressed syntaxes only: the RLE instance is decoded for it, or
    with ``AllowTranscoding`` or ``TranscodeDicomProtocol`` false is a failed
    sub-operation, said in the log."""
    setup.server.config = setup.server.config.with_overrides(
        TranscodeDicomProtocol=protocol, DicomModalities={
            "scu": [SCU_AET, "127.0.0.1", 104], "peer": {
                "AET": PEER_AET, "Host": "127.0.0.1", "Port": setup.peer.port,
                "AllowTranscoding": allowed}})
    [*_, (status, final, failed)] = move(setup, study(setup.study))
    received = {r.sop_instance: r for r in setup.peer.received}
    if not (allowed and protocol):
        assert (status, final.NumberOfCompletedSuboperations,
                final.NumberOfFailedSuboperations) == (0xB000, 3, 1)
        assert failed is not None and failed.FailedSOPInstanceUIDList == rle_instance
        assert sorted(received) == sorted(setup.uids)
        # DeidentifyLogs (on by default) hides the UID.
        assert f"instance <hidden> is stored in RLE Lossless, which {PEER_AET} did not " \
            "accept, and transcoding for it is off" in caplog.text
        return
    assert (status, final.NumberOfCompletedSuboperations) == (0x0000, 4)
    assert sorted(received) == sorted([*setup.uids, rle_instance])
    sent = received[rle_instance]
    assert sent.transfer_syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    original = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    decoded = pydicom.dcmread(_as_file(sent.data_set, sent.transfer_syntax, MRImageStorage,
                                       rle_instance))
    assert (decoded.pixel_array == original.pixel_array).all()


@pytest.mark.parametrize("peer", [[RLELossless, ImplicitVRLittleEndian]], ids=["rle-peer"],
                         indirect=True)
def test_a_compressed_instance_goes_in_its_stored_syntax(setup: Setup, rle_instance: str) -> None:
    [*_, (status, _, _)] = move(setup, study(setup.study))
    assert status == 0x0000
    [received] = [r for r in setup.peer.received if r.sop_instance == rle_instance]
    assert received.transfer_syntax == RLELossless
    original = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    assert pydicom.dcmread(_as_file(received.data_set, RLELossless, MRImageStorage,
                                    rle_instance)).PixelData == original.PixelData


@pytest.mark.lanthorn_config(DicomScuPreferredTransferSyntax=JPEG2000Lossless)
@pytest.mark.parametrize("peer", [[JPEG2000Lossless, ImplicitVRLittleEndian]], ids=["j2k-peer"],
                         indirect=True)
def test_a_refused_instance_is_transcoded_to_the_preferred_syntax(setup: Setup,
                                                                   rle_instance: str) -> None:
    """``DicomScuPreferredTransferSyntax`` is proposed for the RLE instance besides its own
    syntax; the peer takes it, so the instance goes losslessly in JPEG 2000."""
    [*_, (status, _, _)] = move(setup, study(setup.study))
    assert status == 0x0000
    [sent] = [r for r in setup.peer.received if r.sop_instance == rle_instance]
    assert sent.transfer_syntax == JPEG2000Lossless
    original = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    decoded = pydicom.dcmread(_as_file(sent.data_set, JPEG2000Lossless, MRImageStorage,
                                       rle_instance))
    assert (decoded.pixel_array == original.pixel_array).all()


def _as_file(data_set: bytes, syntax: str, sop_class: str, sop_instance: str) -> Any:
    import io

    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info

    meta = FileMetaDataset()
    meta.TransferSyntaxUID, meta.MediaStorageSOPClassUID = syntax, sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    buffer = io.BytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buffer, meta)
    buffer.write(data_set)
    buffer.seek(0)
    return buffer


def test_getscu_receives_the_study(setup: Setup, tmp_path: Path) -> None:
    folder = tmp_path / "received"
    folder.mkdir()
    done = dcmtk("getscu", setup.port, "-S", "-od", str(folder), "-k",
                 "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={setup.study}")
    assert done.returncode == 0, done.stderr
    received = [pydicom.dcmread(path).SOPInstanceUID for path in folder.iterdir()]
    assert sorted(received) == sorted(setup.uids)


def test_pynetdicom_c_get_at_image_level_in_the_patient_root(setup: Setup) -> None:
    model = PatientRootQueryRetrieveInformationModelGet
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(event.request.AffectedSOPInstanceUID)
        return 0x0000

    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    identifier.PatientID, identifier.StudyInstanceUID = "P1", setup.study
    identifier.SOPInstanceUID = setup.uids[:2]
    with scu(setup.port, model, CTImageStorage, ext_neg=[build_role(CTImageStorage, scp_role=True)],
             evt_handlers=[(evt.EVT_C_STORE, on_store)]) as assoc:
        statuses = [s.Status for s, _ in assoc.send_c_get(identifier, model)]
        [accepted] = [a for a in setup.listener.active_associations]
        assert tcp_nodelay(accepted)
    assert statuses == [0xFF00, 0xFF00, 0x0000]
    assert sorted(received) == sorted(setup.uids[:2])


def test_c_get_transcodes_what_the_requestor_cannot_take(setup: Setup,
                                                         rle_instance: str) -> None:
    """The requestor takes MR images in implicit little endian only: the RLE one is
    decoded for it, over the same association."""
    received: list[tuple[str, str]] = []

    def on_store(event: Any) -> int:
        received.append((event.request.AffectedSOPInstanceUID, event.context.transfer_syntax))
        return 0x0000

    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    identifier.StudyInstanceUID, identifier.SOPInstanceUID = setup.study, rle_instance
    ae = AE(SCU_AET)
    ae.add_requested_context(GET)
    ae.add_requested_context(MRImageStorage, ImplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", setup.port, ae_title="LANTHORN",
                         ext_neg=[build_role(MRImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    statuses = [s.Status for s, _ in assoc.send_c_get(identifier, GET)]
    assoc.release()
    assert statuses[-1] == 0x0000
    assert received == [(rle_instance, ImplicitVRLittleEndian)]
