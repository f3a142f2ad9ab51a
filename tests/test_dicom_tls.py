"""DICOM TLS: the listener accepts only TLS associations from trusted certificates, and
Lanthorn requests TLS associations from modalities whose ``UseDicomTls`` is true (real
sockets, certificates made by trustme)."""

from __future__ import annotations

import io
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
import trustme
from dimse_peers import PEER_AET, SCU_AET, listening
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from starlette.testclient import TestClient

import lanthorn
from lanthorn.config import Config, ConfigError
from lanthorn.dimse.scu import LanthornAE
from lanthorn.testing import free_port, make_instance


@dataclass
class Pki:
    """A CA, and the PEM files of its certificates for Lanthorn and for a modality."""

    ca: trustme.CA
    trusted: Path
    server: tuple[Path, Path]  # certificate chain, private key
    modality: trustme.LeafCert


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    trusted = tmp_path / "trusted.pem"
    ca.cert_pem.write_to_path(str(trusted))
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    chain, key = tmp_path / "lanthorn.pem", tmp_path / "lanthorn.key"
    chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return Pki(ca, trusted, (chain, key), ca.issue_cert("modality.example"))


def modality_context(pki: Pki, purpose: ssl.Purpose, *, with_certificate: bool = True
                     ) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose)
    pki.ca.configure_trust(context)
    context.check_hostname = False
    if with_certificate:
        pki.modality.configure_cert(context)
    return context


@pytest.fixture
def peer_port() -> int:
    return free_port()


@pytest.fixture
def lanthorn_config(lanthorn_config: Config, pki: Pki, peer_port: int) -> Config:
    return lanthorn_config.with_overrides(
        DicomBindAddress="127.0.0.1", DicomTlsEnabled=True,
        DicomTlsCertificate=str(pki.server[0]), DicomTlsPrivateKey=str(pki.server[1]),
        DicomTlsTrustedCertificates=str(pki.trusted),
        DicomModalities={"secure": {"AET": PEER_AET, "Host": "127.0.0.1", "Port": peer_port,
                                    "UseDicomTls": True}})


@pytest.fixture
def port(lanthorn_server: lanthorn.Server) -> Iterator[int]:
    with listening(lanthorn_server):
        yield lanthorn_server.config["DicomPort"]


def associate(port: int, tls: ssl.SSLContext | None) -> Any:
    ae = LanthornAE(SCU_AET)  # pynetdicom's AE, with the socket closed when it fails
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    return ae.associate("127.0.0.1", port, ae_title="LANTHORN",
                        tls_args=(tls, None) if tls else None)


def test_the_listener_speaks_tls_to_trusted_modalities_only(
        port: int, pki: Pki, lanthorn_server: lanthorn.Server) -> None:
    trusted = associate(port, modality_context(pki, ssl.Purpose.SERVER_AUTH))
    assert trusted.is_established
    assert trusted.send_c_echo().Status == 0x0000
    sent = pydicom.dcmread(io.BytesIO(make_instance()))
    assert trusted.send_c_store(sent).Status == 0x0000
    trusted.release()
    assert lanthorn_server.index.lookup_identifier(sent.SOPInstanceUID)
    assert not associate(port, None).is_established  # plain DICOM
    anonymous = modality_context(pki, ssl.Purpose.SERVER_AUTH, with_certificate=False)
    assert not associate(port, anonymous).is_established  # no client certificate


def test_lanthorn_requests_tls_from_a_modality_that_uses_it(
        lanthorn_client: TestClient, pki: Pki, peer_port: int) -> None:
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    context = modality_context(pki, ssl.Purpose.CLIENT_AUTH)
    context.verify_mode = ssl.CERT_REQUIRED  # the modality wants Lanthorn's certificate
    ae = AE(PEER_AET)
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage)
    server = ae.start_server(("127.0.0.1", peer_port), block=False, ssl_context=context,
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        assert lanthorn_client.post("/modalities/secure/echo").status_code == 200
        stored = lanthorn_client.post("/instances", content=make_instance()).json()
        report = lanthorn_client.post("/modalities/secure/store", json=[stored["ID"]]).json()
    finally:
        server.shutdown()
    assert report["FailedInstancesCount"] == 0 and len(received) == 1
    configuration = lanthorn_client.get("/modalities/secure/configuration").json()
    assert configuration["UseDicomTls"] is True


def test_tls_without_certificates_refuses_to_start(lanthorn_config: Config) -> None:
    server = lanthorn.Server(lanthorn_config.with_overrides(DicomTlsCertificate=None),
                             load_entry_points=False)
    try:
        with pytest.raises(ConfigError, match="DicomTlsCertificate"):
            server.start(background=False)
    finally:
        server.close()


def test_a_client_that_never_shakes_hands_blocks_no_one(port: int, pki: Pki) -> None:
    silent = socket.create_connection(("127.0.0.1", port))
    try:
        trusted = associate(port, modality_context(pki, ssl.Purpose.SERVER_AUTH))
        assert trusted.is_established
        trusted.release()
    finally:
        silent.close()
