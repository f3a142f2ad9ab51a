"""Access rules of the DICOM listener (Orthanc's options), and peers that misbehave.

Each refusal is checked from the peer's side (rejection, context not accepted, status)
and in the log, which must say why.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dimse_peers import (
    SCU_AET,
    association_request,
    data_set_of,
    dcmtk,
    listening,
    next_pdu_type,
    scu,
    store_request_pdus,
)
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

import lanthorn
from lanthorn.testing import make_instance

NOTHING_ALWAYS_ALLOWED = {"DicomAlwaysAllowEcho": False, "DicomAlwaysAllowStore": False}


@pytest.fixture
def port(lanthorn_server: lanthorn.Server) -> Iterator[int]:
    with listening(lanthorn_server):
        yield lanthorn_server.config["DicomPort"]


def configured(**options: Any) -> pytest.MarkDecorator:
    return pytest.mark.lanthorn_config(DicomBindAddress="127.0.0.1", **options)


def study_find(port: int, aet: str = SCU_AET) -> str:
    """findscu's stderr for a study-level query (it fails when no context is accepted)."""
    return dcmtk("findscu", port, "-S", "-k", "QueryRetrieveLevel=STUDY", aet=aet).stderr


@configured(DicomCheckCalledAet=True)
def test_a_wrong_called_aet_is_rejected_when_checked(port: int,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    wrong = dcmtk("echoscu", port, "-aec", "ELSEWHERE")
    assert wrong.returncode != 0 and "Called AE Title Not Recognized" in wrong.stderr
    assert 'it calls AET "ELSEWHERE", not "LANTHORN" (DicomCheckCalledAet is true)' \
        in caplog.text
    assert dcmtk("echoscu", port, "-aec", "lanthorn").returncode == 0  # AETs ignore case


@configured()
def test_the_called_aet_is_not_checked_by_default(port: int) -> None:
    assert dcmtk("echoscu", port, "-aec", "ELSEWHERE").returncode == 0


@configured(**NOTHING_ALWAYS_ALLOWED)
def test_an_unknown_aet_allowed_nothing_is_rejected(port: int,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    done = dcmtk("echoscu", port, aet="STRANGER")
    assert done.returncode != 0 and "Calling AE Title Not Recognized" in done.stderr
    assert "no service is allowed" in caplog.text
    assert 'AET "STRANGER" at 127.0.0.1 is not in DicomModalities' in caplog.text


@configured()
def test_by_default_an_unknown_aet_may_echo_and_store_but_not_query(
        port: int, lanthorn_server: lanthorn.Server, tmp_path: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    assert dcmtk("echoscu", port, aet="STRANGER").returncode == 0
    (tmp_path / "ct.dcm").write_bytes(make_instance())
    stored = dcmtk("storescu", port, aet="STRANGER", files=(str(tmp_path / "ct.dcm"),))
    assert stored.returncode == 0
    assert lanthorn_server.index.statistics().count_by_level[lanthorn.Level.INSTANCE] == 1
    assert "No Acceptable Presentation Contexts" in study_find(port, "STRANGER")
    assert ("Find is not accepted, as AET \"STRANGER\" at 127.0.0.1 is not in DicomModalities, "
            "and DicomAlwaysAllowFind is false") in caplog.text


LIMITED = {"AET": SCU_AET, "Host": "127.0.0.1", "Port": 104, "AllowFind": False,
           "AllowStore": False}


@configured(DicomModalities={"limited": LIMITED}, **NOTHING_ALWAYS_ALLOWED)
def test_per_modality_permissions(port: int, lanthorn_server: lanthorn.Server,
                                  caplog: pytest.LogCaptureFixture) -> None:
    assert "No Acceptable Presentation Contexts" in study_find(port)
    assert 'Find is not accepted, as modality "limited" has AllowFind false' in caplog.text
    assert dcmtk("echoscu", port).returncode == 0  # AllowEcho defaults to true
    # Storage contexts stay for C-GET's sake (AllowGet is true): C-STORE is refused per request.
    with scu(port, CTImageStorage) as assoc:
        status = assoc.send_c_store(pydicom.dcmread(io.BytesIO(make_instance())))
    assert status.Status == 0x0124
    assert "AllowStore false" in status.ErrorComment
    assert lanthorn_server.index.statistics().count_by_level[lanthorn.Level.INSTANCE] == 0


@pytest.mark.parametrize(("host", "allowed"), [("192.0.2.1", False), ("localhost", True)])
def test_dicom_check_modality_host(lanthorn_config: Any, host: str, allowed: bool,
                                   caplog: pytest.LogCaptureFixture) -> None:
    config = lanthorn_config.with_overrides(
        DicomBindAddress="127.0.0.1", DicomCheckModalityHost=True,
        DicomModalities={"scu": {"AET": SCU_AET, "Host": host, "Port": 104}})
    with serving(config) as port:
        refused = "No Acceptable Presentation Contexts" in study_find(port)
    assert refused != allowed
    assert ("DicomCheckModalityHost is true" in caplog.text) != allowed


@pytest.mark.parametrize(("strict", "allowed"), [(False, True), (True, False)])
def test_strict_aet_comparison(lanthorn_config: Any, strict: bool, allowed: bool) -> None:
    config = lanthorn_config.with_overrides(
        DicomBindAddress="127.0.0.1", StrictAetComparison=strict,
        DicomModalities={"scu": [SCU_AET.lower(), "127.0.0.1", 104]})
    with serving(config) as port:
        refused = "No Acceptable Presentation Contexts" in study_find(port)
    assert refused != allowed


@pytest.mark.parametrize(("service", "sop_class"), [
    ("Move", StudyRootQueryRetrieveInformationModelMove),
    ("Get", StudyRootQueryRetrieveInformationModelGet)])
@pytest.mark.parametrize("always", [False, True])
def test_an_unknown_aet_may_retrieve_only_when_always_allowed(
        lanthorn_config: Any, service: str, sop_class: str, always: bool,
        caplog: pytest.LogCaptureFixture) -> None:
    config = lanthorn_config.with_overrides(DicomBindAddress="127.0.0.1",
                                            **{f"DicomAlwaysAllow{service}": always})
    with serving(config) as port, scu(port, Verification, sop_class, aet="STRANGER") as assoc:
        accepted = {context.abstract_syntax for context in assoc.accepted_contexts}
    assert (sop_class in accepted) == always
    assert (f"{service} is not accepted" in caplog.text) != always
    assert (f"DicomAlwaysAllow{service} is false" in caplog.text) != always


class serving:  # noqa: N801 - a context manager used like a function
    """A server of its own on ``config``, listening; gives its DICOM port."""

    def __init__(self, config: Any) -> None:
        self.server = lanthorn.Server(config, load_entry_points=False)

    def __enter__(self) -> int:
        self.listening = listening(self.server)
        self.listening.__enter__()
        return self.server.config["DicomPort"]

    def __exit__(self, *exc: object) -> None:
        self.listening.__exit__(*exc)
        self.server.close()


# -- a peer that disappears in the middle of a C-STORE ---------------------------------


@configured()
def test_a_peer_vanishing_mid_store_leaves_nothing_and_the_server_up(
        port: int, lanthorn_server: lanthorn.Server, caplog: pytest.LogCaptureFixture) -> None:
    instance = make_instance(rows=256, columns=256)  # 128 kB of pixels: several PDUs
    pdus = store_request_pdus(data_set_of(instance))
    with socket.create_connection(("127.0.0.1", port)) as peer:
        peer.sendall(association_request("LANTHORN"))
        assert peer.recv(1)[0] == 0x02  # A-ASSOCIATE-AC
        for pdu in pdus[: len(pdus) // 2]:
            peer.sendall(pdu)
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while "aborted" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "association from AET VANISHING at 127.0.0.1 aborted" in caplog.text
    with scu(port, Verification) as assoc:
        assert assoc.send_c_echo().Status == 0x0000
    assert lanthorn_server.index.statistics().count_by_level[lanthorn.Level.INSTANCE] == 0
    storage = Path(lanthorn_server.config["StorageDirectory"])
    assert [p for p in storage.rglob("*")
            if p.is_file() and not p.name.startswith("index.")] == []


@configured()
def test_a_store_request_on_a_context_never_negotiated_aborts_the_association(
        port: int, lanthorn_server: lanthorn.Server) -> None:
    """C-STOREs are served on the thread that reads the association (``reactor.py``):
    one that pynetdicom answers with an abort must still get it, and nothing stored."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as peer:
        peer.sendall(association_request("LANTHORN"))
        assert next_pdu_type(peer) == 0x02  # A-ASSOCIATE-AC
        for pdu in store_request_pdus(data_set_of(make_instance()), context_id=3):
            peer.sendall(pdu)
        assert next_pdu_type(peer) == 0x07  # A-ABORT
    with scu(port, Verification) as assoc:
        assert assoc.send_c_echo().Status == 0x0000
    assert lanthorn_server.index.statistics().count_by_level[lanthorn.Level.INSTANCE] == 0


@configured()
def test_a_second_listener_cannot_take_the_port(port: int,
                                               lanthorn_server: lanthorn.Server) -> None:
    """Only the workers of one ``lanthorn serve --workers`` share a DICOM port (their
    supervisor binds it); another server started on it by mistake fails to."""
    with pytest.raises(OSError), listening(lanthorn_server):
        pass


@configured(DicomThreadsCount=2)
def test_silent_connections_take_no_association_slot(port: int) -> None:
    """Health checks that connect and say nothing must not lock modalities out; the
    limit still holds for associations."""
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        time.sleep(0.2)  # the listener has accepted them
        ae = AE(SCU_AET)
        ae.add_requested_context(Verification)
        held = [ae.associate("127.0.0.1", port, ae_title="LANTHORN") for _ in range(3)]
        assert [a.is_established for a in held] == [True, True, False]
        assert held[2].is_rejected
        for association in held[:2]:
            association.release()
    finally:
        for connection in silent:
            connection.close()


@configured(DicomScpTimeout=1, MaximumPduLength=16384)
def test_an_idle_association_ends_after_the_scp_timeout(port: int) -> None:
    """A peer that falls silent (a modality switched off mid-association) holds its slot
    for ``DicomScpTimeout`` seconds, not for ever; the A-ASSOCIATE-AC announced
    ``MaximumPduLength``."""
    ae = AE(SCU_AET)
    ae.add_requested_context(Verification)
    ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 60  # we do not end it
    association = ae.associate("127.0.0.1", port, ae_title="LANTHORN")
    assert association.is_established and association.acceptor.maximum_length == 16384
    opened = time.monotonic()
    while association.is_alive() and time.monotonic() - opened < 20:
        time.sleep(0.05)
    assert association.is_aborted and 0.9 <= time.monotonic() - opened < 20
    with scu(port, Verification) as again:
        assert again.send_c_echo().Status == 0x0000


PRIVATE_SOP_CLASS = "1.3.6.1.4.1.99999.1.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def private_instance() -> Any:
    dataset = pydicom.dcmread(io.BytesIO(make_instance()))
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = PRIVATE_SOP_CLASS
    return dataset


@pytest.mark.parametrize("accepted", [False, True])
def test_unknown_sop_classes_are_stored_only_when_accepted(
        lanthorn_config: Any, accepted: bool) -> None:
    server = lanthorn.Server(lanthorn_config.with_overrides(
        UnknownSopClassAccepted=accepted, AcceptedTransferSyntaxes=[ExplicitVRLittleEndian]),
        load_entry_points=False)
    dataset = private_instance()
    try:
        with listening(server):
            ae = AE(SCU_AET)
            ae.add_requested_context(PRIVATE_SOP_CLASS, JPEG_BASELINE)  # a refused syntax
            ae.add_requested_context(PRIVATE_SOP_CLASS, ExplicitVRLittleEndian)
            ae.add_requested_context(Verification)
            association = ae.associate("127.0.0.1", server.config["DicomPort"],
                                       ae_title="LANTHORN")
            contexts = [(c.abstract_syntax, c.transfer_syntax[0])
                        for c in association.accepted_contexts
                        if c.abstract_syntax == PRIVATE_SOP_CLASS]
            if accepted:  # AcceptedTransferSyntaxes still hold
                assert contexts == [(PRIVATE_SOP_CLASS, ExplicitVRLittleEndian)]
                assert association.send_c_store(dataset).Status == 0x0000
            else:
                assert contexts == []
            association.release()
        stored = server.index.lookup_identifier(dataset.SOPInstanceUID)
        assert len(stored) == accepted
    finally:
        server.close()


def test_a_modality_added_over_rest_is_let_in_at_once(port: int, lanthorn_server: Any) -> None:
    from starlette.testclient import TestClient

    ae = AE("NEWCOMER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(Verification)

    def find_accepted() -> bool:
        association = ae.associate("127.0.0.1", port, ae_title="LANTHORN")
        assert association.is_established
        accepted = StudyRootQueryRetrieveInformationModelFind in \
            [c.abstract_syntax for c in association.accepted_contexts]
        association.release()
        return accepted

    assert not find_accepted()  # an unknown AET may not query
    with TestClient(lanthorn_server.app) as client:
        client.put("/modalities/newcomer", json={"AET": "NEWCOMER", "Host": "127.0.0.1",
                                                 "Port": 104})
    assert find_accepted()


def test_listener_settings_changed_over_rest_apply_to_the_next_association(
        port: int, lanthorn_server: Any) -> None:
    from starlette.testclient import TestClient

    def accepted(*contexts: tuple[str, str]) -> list[tuple[str, str]]:
        ae = AE(SCU_AET)
        for context in contexts:
            ae.add_requested_context(*context)
        ae.add_requested_context(Verification)
        association = ae.associate("127.0.0.1", port, ae_title="LANTHORN")
        found = [(c.abstract_syntax, c.transfer_syntax[0]) for c in association.accepted_contexts
                 if c.abstract_syntax != Verification]
        association.release()
        return found

    implicit = (CTImageStorage, "1.2.840.10008.1.2")
    private = (PRIVATE_SOP_CLASS, ExplicitVRLittleEndian)
    assert accepted(implicit, private) == [implicit]
    with TestClient(lanthorn_server.app) as client:
        narrowed = client.put("/tools/accepted-transfer-syntaxes", json=[ExplicitVRLittleEndian])
        assert narrowed.json() == [ExplicitVRLittleEndian]
        assert client.put("/tools/unknown-sop-class-accepted", content="1").status_code == 200
        assert client.get("/tools/unknown-sop-class-accepted").text == "1"
        assert accepted(implicit, private) == [private]
        assert client.put("/tools/accepted-transfer-syntaxes",
                          json=["9.9.*"]).status_code == 400  # matches nothing
        assert client.put("/tools/unknown-sop-class-accepted", content="maybe").status_code == 400
        widened = client.put("/tools/accepted-transfer-syntaxes", json="1.2.840.10008.1.2*")
        assert "1.2.840.10008.1.2" in widened.json()
    assert accepted(implicit) == [implicit]
