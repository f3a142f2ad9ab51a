"""DICOM TLS (PS3.15 B.1): the SSL contexts of the listener and of the associations
Lanthorn requests from modalities whose ``UseDicomTls`` is true.

Modalities are addressed by IP address more often than by name, so trust comes from
``DicomTlsTrustedCertificates`` alone (no host name check), as in Orthanc.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from ..config import ConfigError

if TYPE_CHECKING:
    from ..config import Config


def listener_context(config: Config) -> ssl.SSLContext | None:
    """The listener's context when ``DicomTlsEnabled``, else None (plain DICOM)."""
    if not config["DicomTlsEnabled"]:
        return None
    context = _context(config, ssl.Purpose.CLIENT_AUTH, own_certificate_required=True)
    context.verify_mode = ssl.CERT_REQUIRED if config["DicomTlsRemoteCertificateRequired"] \
        else ssl.CERT_OPTIONAL
    return context


def client_context(config: Config) -> ssl.SSLContext:
    """The context of an association requested over TLS (with our certificate, if any)."""
    context = _context(config, ssl.Purpose.SERVER_AUTH, own_certificate_required=False)
    context.check_hostname = False
    return context


def _context(config: Config, purpose: ssl.Purpose, *,
             own_certificate_required: bool) -> ssl.SSLContext:
    certificate, key = config["DicomTlsCertificate"], config["DicomTlsPrivateKey"]
    trusted = config["DicomTlsTrustedCertificates"]
    if own_certificate_required and not (certificate and key):
        raise ConfigError("DicomTlsEnabled needs DicomTlsCertificate and DicomTlsPrivateKey")
    if not trusted:
        raise ConfigError("DICOM TLS needs DicomTlsTrustedCertificates: the certificates "
                          "of the modalities to trust")
    try:
        context = ssl.create_default_context(purpose, cafile=trusted)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if certificate:
            context.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"DICOM TLS: cannot load the certificates: {exc}") from None
    return context
