"""C-FIND SCP against real peers: DCMTK findscu and pynetdicom, every level of both models.

One archive (module scope) serves the matching tests:

    P1 Doe^John    S1 20200101 CHEST: series CT (1 instance), series CT (2 instances)
                   S2 20210615: series MR (1 instance)
    P2 Smith^Anna  S3 20220505: series CT (1 instance)
    P3 DOE^JANE    S4 19991231: series CT (1 instance)
    P4 Müller^Jörg, P5 Ωμέγα^Αλφα (UTF-8 in the files): one CT instance each
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dimse_peers import SCU_AET, dcmtk, listening, read_answers, scu, store, tcp_nodelay
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

import lanthorn
from lanthorn.config import Config
from lanthorn.testing import free_port

pytestmark = pytest.mark.all_index_backends

STUDY_ROOT = StudyRootQueryRetrieveInformationModelFind
PATIENT_ROOT = PatientRootQueryRetrieveInformationModelFind
MODALITIES = {"scu": [SCU_AET, "127.0.0.1", 104]}


@dataclass
class Archive:
    server: lanthorn.Server
    listener: Any
    port: int
    studies: dict[str, str]  # S1..S4 -> StudyInstanceUID
    series: dict[str, str]  # S1a, S1b -> SeriesInstanceUID
    instances: list[Dataset]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    config = Config.defaults().with_overrides(
        StorageDirectory=str(tmp_path_factory.mktemp("find") / "storage"),
        DicomPort=free_port(), DicomBindAddress="127.0.0.1", DicomModalities=MODALITIES)
    server = lanthorn.Server(config, load_entry_points=False)
    server.start(background=False)
    studies = {name: generate_uid() for name in ("S1", "S2", "S3", "S4")}
    series = {name: generate_uid() for name in ("S1a", "S1b")}
    john = {"PatientID": "P1", "PatientName": "Doe^John"}
    instances = [
        store(server, **john, StudyInstanceUID=studies["S1"], SeriesInstanceUID=series["S1a"],
              StudyDate="20200101", StudyDescription="CHEST"),
        *(store(server, **john, StudyInstanceUID=studies["S1"], SeriesInstanceUID=series["S1b"],
                StudyDate="20200101", StudyDescription="CHEST", InstanceNumber=n)
          for n in (1, 2)),
        store(server, **john, StudyInstanceUID=studies["S2"], StudyDate="20210615", Modality="MR"),
        store(server, PatientID="P2", PatientName="Smith^Anna", StudyInstanceUID=studies["S3"],
              StudyDate="20220505"),
        store(server, PatientID="P3", PatientName="DOE^JANE", StudyInstanceUID=studies["S4"],
              StudyDate="19991231"),
        store(server, PatientID="P4", PatientName="Müller^Jörg", SpecificCharacterSet="ISO_IR 192"),
        store(server, PatientID="P5", PatientName="Ωμέγα^Αλφα", SpecificCharacterSet="ISO_IR 192"),
    ]
    try:
        with listening(server) as listener:
            yield Archive(server, listener, config["DicomPort"], studies, series, instances)
    finally:
        server.stop()
        server.close()


def findscu(archive: Archive, tmp_path: Path, *keys: str, model: str = "-S") -> list[Dataset]:
    tmp_path.mkdir(exist_ok=True)
    done = dcmtk("findscu", archive.port, model, "-X", "-od", str(tmp_path),
                 *(arg for key in keys for arg in ("-k", key)))
    assert done.returncode == 0, done.stderr
    return read_answers(tmp_path)


@pytest.mark.parametrize(("keys", "expected"), [
    (["PatientName=doe*"], {"S1", "S2", "S4"}),  # wildcard; PN ignores case
    (["PatientName=DOE^JOHN"], {"S1", "S2"}),
    (["PatientID=P2"], {"S3"}),
    (["PatientID=p2"], set()),  # LO is case-sensitive
    (["StudyDate=20200101-20211231"], {"S1", "S2"}),
    (["StudyDate=-20000101"], {"S4"}),
    (["StudyInstanceUID={S1}\\{S3}"], {"S1", "S3"}),
    (["ModalitiesInStudy=MR"], {"S2"}),
    (["PatientName=smith*", "StudyDate=20220505"], {"S3"}),
    (["PatientName=smith*", "StudyDate=20200101"], set()),
    (["StudyDescription=CH?ST"], {"S1"}),
], ids=["wildcard", "pn-case", "exact", "lo-case", "range", "open-range", "uid-list",
        "modalities", "and", "and-none", "question-mark"])
def test_findscu_study_root_matching(archive: Archive, tmp_path: Path, keys: list[str],
                                     expected: set[str]) -> None:
    keys = [key.format(**archive.studies) for key in keys]
    answers = findscu(archive, tmp_path, "QueryRetrieveLevel=STUDY", "StudyInstanceUID", *keys)
    by_uid = {uid: name for name, uid in archive.studies.items()}
    assert {by_uid[a.StudyInstanceUID] for a in answers} == expected


def test_findscu_returns_the_requested_keys_and_no_others(archive: Archive,
                                                          tmp_path: Path) -> None:
    asked = ["PatientName=doe^john", "StudyDate", "NumberOfStudyRelatedInstances",
             "NumberOfStudyRelatedSeries", "ModalitiesInStudy", "StudyInstanceUID",
             "StudyDescription", "AccessionNumber", "PatientSex"]
    answers = findscu(archive, tmp_path, "QueryRetrieveLevel=STUDY", *asked)
    first = next(a for a in answers if a.StudyInstanceUID == archive.studies["S1"])
    assert set(first.dir()) == {key.split("=")[0] for key in asked} | {
        "QueryRetrieveLevel", "RetrieveAETitle", "SpecificCharacterSet"}
    assert (first.QueryRetrieveLevel, first.RetrieveAETitle) == ("STUDY", "LANTHORN")
    assert (first.NumberOfStudyRelatedInstances, first.NumberOfStudyRelatedSeries) == (3, 2)
    assert (first.StudyDate, first.ModalitiesInStudy, first.StudyDescription) == \
        ("20200101", "CT", "CHEST")
    assert first.AccessionNumber == "" and first.PatientSex == ""  # not in the files


def test_findscu_patient_root_every_level(archive: Archive, tmp_path: Path) -> None:
    patients = findscu(archive, tmp_path / "patients", "QueryRetrieveLevel=PATIENT",
                       "PatientID", "NumberOfPatientRelatedStudies", model="-P")
    counts = {p.PatientID: p.NumberOfPatientRelatedStudies for p in patients}
    assert counts == {"P1": 2, "P2": 1, "P3": 1, "P4": 1, "P5": 1}

    series = findscu(archive, tmp_path / "series", "QueryRetrieveLevel=SERIES", "PatientID=P1",
                     f"StudyInstanceUID={archive.studies['S1']}", "Modality=CT",
                     "SeriesInstanceUID", "NumberOfSeriesRelatedInstances", model="-P")
    assert {(s.SeriesInstanceUID, s.NumberOfSeriesRelatedInstances) for s in series} == {
        (archive.series["S1a"], 1), (archive.series["S1b"], 2)}

    images = findscu(archive, tmp_path / "images", "QueryRetrieveLevel=IMAGE", "PatientID=P1",
                     f"StudyInstanceUID={archive.studies['S1']}",
                     f"SeriesInstanceUID={archive.series['S1b']}", "InstanceNumber=2",
                     "SOPInstanceUID", "Rows", "SOPClassUID", model="-P")
    assert [(i.SOPInstanceUID, i.Rows) for i in images] == [
        (archive.instances[2].SOPInstanceUID, 8)]  # Rows comes from the saved header
    assert images[0].SOPClassUID == archive.instances[2].SOPClassUID


@pytest.mark.parametrize(("patient", "charset", "name"), [
    ("P4", "ISO_IR 100", "Müller^Jörg"), ("P5", "ISO_IR 192", "Ωμέγα^Αλφα")])
def test_answers_use_latin1_unless_a_value_needs_utf8(archive: Archive, tmp_path: Path,
                                                      patient: str, charset: str,
                                                      name: str) -> None:
    [answer] = findscu(archive, tmp_path, "QueryRetrieveLevel=PATIENT", f"PatientID={patient}",
                       "PatientName", model="-P")
    assert (answer.SpecificCharacterSet, answer.PatientName) == (charset, name)


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian,
                                    ExplicitVRBigEndian])
def test_answers_are_written_in_the_negotiated_syntax(archive: Archive, syntax: str) -> None:
    """Index strings (UTF-8 text, a UID, an odd-length code string), a header's binary
    value (Rows, a US) and the listener's own elements, decoded by the peer."""
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.PatientID, query.PatientName, query.SOPInstanceUID, query.Rows = "P5", "", "", None
    ae = AE(SCU_AET)
    ae.add_requested_context(PATIENT_ROOT, [syntax])
    association = ae.associate("127.0.0.1", archive.port, ae_title="LANTHORN")
    assert association.is_established
    try:
        assert association.accepted_contexts[0].transfer_syntax == [syntax]
        [(pending, answer), (final, _)] = list(association.send_c_find(query, PATIENT_ROOT))
    finally:
        association.release()
    assert (pending.Status, final.Status) == (0xFF00, 0x0000)
    assert (answer.PatientName, answer.PatientID, answer.Rows) == ("Ωμέγα^Αλφα", "P5", 8)
    assert answer.SOPInstanceUID == archive.instances[-1].SOPInstanceUID
    assert (answer.SpecificCharacterSet, answer.QueryRetrieveLevel, answer.RetrieveAETitle) == \
        ("ISO_IR 192", "IMAGE", "LANTHORN")


def test_answers_go_through_pynetdicom_when_its_sent_handlers_want_them(
        archive: Archive) -> None:
    """With an EVT_DIMSE_SENT handler bound (as ``--verbose`` binds pynetdicom's), the
    responses are encoded by pynetdicom and sent by the DUL thread, and the handler sees
    each of them; the answers are the same as when the listener writes them itself."""
    query = study_query(PatientID="P1", StudyDate="")
    seen: list[int] = []

    def sent(event: Any) -> None:
        if isinstance(event.message, C_FIND_RSP):
            seen.append(event.message.command_set.Status)

    direct = find(archive.port, query)
    archive.listener.bind(evt.EVT_DIMSE_SENT, sent)
    try:
        through_pynetdicom = find(archive.port, query)
    finally:
        archive.listener.unbind(evt.EVT_DIMSE_SENT, sent)
    assert seen == [0xFF00, 0xFF00, 0x0000]
    assert [(s, a and (a.StudyInstanceUID, a.StudyDate)) for s, a in through_pynetdicom] == \
        [(s, a and (a.StudyInstanceUID, a.StudyDate)) for s, a in direct]
    assert {a.StudyInstanceUID for _, a in direct if a} == {archive.studies[s]
                                                            for s in ("S1", "S2")}


def test_the_listener_sets_tcp_nodelay_on_accepted_sockets(archive: Archive) -> None:
    with scu(archive.port, STUDY_ROOT):
        [accepted] = archive.listener.active_associations
        assert tcp_nodelay(accepted)


# -- pynetdicom peers, on servers of their own ------------------------------------------


@pytest.fixture
def port(lanthorn_server: lanthorn.Server) -> Iterator[int]:
    with listening(lanthorn_server):
        yield lanthorn_server.config["DicomPort"]


def find(port: int, query: Dataset, model: str = STUDY_ROOT) -> list[tuple[int, Dataset | None]]:
    with scu(port, model) as assoc:
        return [(status.Status, answer) for status, answer in assoc.send_c_find(query, model)]


def study_query(**keys: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    return query


@pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1", DicomModalities=MODALITIES,
                             LimitFindResults=2)
def test_limit_find_results_sends_the_first_answers_then_cancel_status(
        lanthorn_server: lanthorn.Server, port: int, caplog: pytest.LogCaptureFixture) -> None:
    for _ in range(3):
        store(lanthorn_server)
    responses = find(port, study_query())
    assert [status for status, _ in responses] == [0xFF00, 0xFF00, 0xFE00]
    assert "more than 2 matches" in caplog.text


class SlowAnswers:
    """Answers one study, then waits (up to 10 s) for the peer to cancel before the next."""

    @lanthorn.hookimpl
    def handle_c_find(self, request: lanthorn.DimseRequest) -> Iterator[Dataset]:
        yield study_query(StudyInstanceUID="1.2.3.1")
        cancelled = threading.Event()
        for _ in range(1000):
            if request.is_cancelled():
                cancelled.set()
                break
            cancelled.wait(0.01)
        yield study_query(StudyInstanceUID="1.2.3.2")


@pytest.mark.lanthorn_plugins(SlowAnswers())
@pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1", DicomModalities=MODALITIES)
def test_c_cancel_stops_the_answers(port: int) -> None:
    with scu(port, STUDY_ROOT) as assoc:
        responses = assoc.send_c_find(study_query(), STUDY_ROOT, msg_id=7)
        status, answer = next(responses)
        assert (status.Status, answer.StudyInstanceUID) == (0xFF00, "1.2.3.1")
        assoc.send_c_cancel(7, query_model=STUDY_ROOT)
        assert [status.Status for status, _ in responses] == [0xFE00]


@pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1", DicomModalities=MODALITIES)
def test_an_invalid_identifier_is_refused_with_a_reason(
        port: int, caplog: pytest.LogCaptureFixture) -> None:
    wrong_level = Dataset()
    wrong_level.QueryRetrieveLevel = "PATIENT"  # the Study Root model has no patient level
    assert [s for s, _ in find(port, wrong_level)] == [0xA900]
    assert "Study Root model has no PATIENT level" in caplog.text
    no_level = Dataset()
    no_level.PatientID = "P1"
    assert [s for s, _ in find(port, no_level)] == [0xA900]
    assert 'QueryRetrieveLevel "" is not PATIENT' in caplog.text


@pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1", DicomModalities=MODALITIES)
def test_a_malformed_identifier_gets_a_failure_status(port: int,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Bytes that are no data set: a US value (Rows) of three bytes."""
    with scu(port, STUDY_ROOT) as assoc:
        request = C_FIND()
        request.MessageID, request.AffectedSOPClassUID, request.Priority = 1, STUDY_ROOT, 2
        request.Identifier = io.BytesIO(b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY "
                                        b"\x28\x00\x10\x00\x03\x00\x00\x00abc")
        context = assoc._get_valid_context(STUDY_ROOT, "", "scu")
        assert context.transfer_syntax[0] == ImplicitVRLittleEndian  # how the bytes are laid
        # Pause the association's reactor, as pynetdicom's send_c_* do, to get the answer.
        assoc._reactor_checkpoint.clear()
        while not assoc._is_paused:
            time.sleep(0.001)
        assoc.dimse.send_msg(request, context.context_id)
        _, response = assoc.dimse.get_msg(block=True)
        assoc._reactor_checkpoint.set()
    assert response.Status == 0xA900
    assert "the identifier cannot be decoded" in caplog.text


@pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1", DicomModalities=MODALITIES,
                             DicomAlwaysAllowFindWorklist=True)
def test_a_worklist_query_without_a_worklist_plugin_is_refused(
        port: int, caplog: pytest.LogCaptureFixture) -> None:
    query = Dataset()
    query.PatientName = ""
    responses = find(port, query, ModalityWorklistInformationFind)
    assert [status for status, _ in responses] == [0x0122]
    assert "worklist C-FIND from TESTSCU refused: no plugin answers it" in caplog.text


class BrokenFinder:
    @lanthorn.hookimpl
    def handle_c_find(self) -> None:
        raise RuntimeError("the finder is broken")


@pytest.mark.lanthorn_plugins(BrokenFinder())
@pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1", DicomModalities=MODALITIES)
def test_a_failing_plugin_is_a_failure_status_and_a_log_line(
        port: int, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="lanthorn"):
        assert [status for status, _ in find(port, study_query())] == [0xC000]
    assert "C-FIND from TESTSCU failed" in caplog.text
    assert "the finder is broken" in caplog.text
    assert find(port, study_query())  # the association and the server carry on
