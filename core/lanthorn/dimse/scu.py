"""Lanthorn as a DICOM client: associations, C-ECHO, and the store SCU.

The store SCU serves ``POST /modalities/{id}/store`` and the sub-operations of C-MOVE
and C-GET alike: the same planning (which instances, which presentation contexts), the
same reading of stored files, one instance in memory at a time, and the same transcoding
when the peer refuses an instance's stored syntax.
"""

from __future__ import annotations

import io
import logging
import socket
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.status import code_to_category
from pynetdicom.transport import AssociationSocket

from ..errors import LanthornError, NetworkError
from ..index.records import Attachment, ResourceInfo
from ..ingest import DICOM_ATTACHMENT
from ..model import Level
from ..redact import phi
from ..storage import read_all
from ..transcode import transcode
from .tls import client_context

if TYPE_CHECKING:
    from ssl import SSLContext

    from pynetdicom.association import Association
    from pynetdicom.presentation import PresentationContext
    from pynetdicom.transport import AddressInformation

    from ..server import Server
    from .access import Modality

log = logging.getLogger(__name__)

SOP_INSTANCE_UID = 0x00080018
#: Stored syntaxes pydicom can re-encode as either uncompressed syntax while sending.
CONVERTIBLE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                         DeflatedExplicitVRLittleEndian})
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
#: An association request carries at most 128 presentation contexts (PS3.8 9.3.2).
MAX_CONTEXTS = 128


class ClientSocket(AssociationSocket):
    """The socket of an association Lanthorn requests.

    Nagle's algorithm is off: without TCP_NODELAY each small PDU (a C-STORE response,
    a C-FIND answer) waits for the peer's delayed ACK, about 40 ms on Linux. And the
    socket is closed when the connection fails: pynetdicom 3.0.4 skips ``close()`` when
    ``shutdown()`` fails, as it does on a socket that never connected.
    """

    def _create_socket(self, address: AddressInformation) -> socket.socket:
        sock = super()._create_socket(address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _shutdown_socket(self) -> None:
        super()._shutdown_socket()
        if self.socket is not None:
            self.socket.close()


class LanthornAE(AE):
    """pynetdicom's AE, requesting associations over a :class:`ClientSocket`, and
    counting towards ``maximum_associations`` only peers that asked for one."""

    @property
    def active_associations(self) -> list[Association]:
        """Without the accepted connections that sent no A-ASSOCIATE-RQ yet.

        pynetdicom counts every accepted TCP connection against the limit, so a health
        check or port probe that connects and says nothing (until ``DicomScpTimeout``)
        made real modalities get "local limit exceeded" rejections.
        """
        return [association for association in super().active_associations
                if association.is_requestor or association.requestor.primitive is not None]

    def _create_socket(self, assoc: Association, address: AddressInformation,
                       tls_args: tuple[SSLContext, str] | None) -> ClientSocket:
        sock = ClientSocket(assoc, address=address)
        sock.tls_args = tls_args
        return sock


@contextmanager
def associate(server: Server, modality: Modality, contexts: list[PresentationContext],
              timeout: float | None = None, **options: Any) -> Iterator[Association]:
    """An association with a modality, released on leaving; NetworkError without one.

    ``timeout`` (seconds, as a request's ``Timeout``) overrides the modality's and
    ``DicomScuTimeout``; 0 means none. ``options`` go to pynetdicom's ``associate``
    (role selection and handlers of a C-GET)."""
    ae = LanthornAE(ae_title=modality.local_aet or server.config["DicomAet"])
    if timeout is None:
        timeout = float(modality.timeout or server.config["DicomScuTimeout"])
    timeout = timeout or None
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    if modality.use_tls:
        options["tls_args"] = (client_context(server.config), None)
    association = ae.associate(modality.host, modality.port, contexts, modality.aet,
                               max_pdu=int(server.config["MaximumPduLength"]), **options)
    if not association.is_established:
        why = "the association was rejected" if association.is_rejected \
            else "it accepted none of the proposed presentation contexts" \
            if association.acceptor.primitive is not None \
            else "no association (connection refused, or no answer)"
        raise NetworkError(f'cannot reach modality "{modality.name}" (AET {modality.aet} '
                           f"at {modality.host}:{modality.port}): {why}")
    try:
        yield association
    finally:
        association.release()


def echo(server: Server, modality: Modality, timeout: float | None = None) -> None:
    """C-ECHO; NetworkError unless the modality answers success (``associate`` says what
    ``timeout`` overrides)."""
    with associate(server, modality, [build_context(Verification)], timeout) as association:
        status = association.send_c_echo().get("Status")
    if status != 0x0000:
        raise NetworkError(f'C-ECHO to modality "{modality.name}" failed'
                           + (f" with status 0x{status:04X}" if status is not None else ""))


# -- sub-operations ------------------------------------------------------------------


@dataclass(frozen=True)
class SubOperation:
    """One instance to send: a stored one (read when sent) or a dataset a plugin gave."""

    sop_class: str
    sop_instance: str
    transfer_syntax: str
    attachment: Attachment | None = None
    dataset: Dataset | None = None


def plan(server: Server, items: Iterable[str | Dataset]) -> list[SubOperation]:
    """Instances to send, in order: public IDs stand for all their instances."""
    operations: list[SubOperation] = []
    for item in items:
        if isinstance(item, Dataset):
            operations.append(_given(item))
            continue
        resource = server.index.lookup(item)
        if resource is None:
            log.warning("resource %s to send does not exist (deleted meanwhile?)", item)
            continue
        instances = server.index.descendants(resource.id, Level.INSTANCE)
        operations += [_stored(info) for info in server.index.describe(instances)]
    return operations


def _given(dataset: Dataset) -> SubOperation:
    meta = getattr(dataset, "file_meta", Dataset())
    return SubOperation(str(dataset.get("SOPClassUID", "")),
                        str(dataset.get("SOPInstanceUID", "")),
                        str(meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)),
                        dataset=dataset)


def _stored(info: ResourceInfo) -> SubOperation:
    return SubOperation(info.metadata.get("SopClassUid", ""),
                        info.main_tags.get(SOP_INSTANCE_UID, ""),
                        info.metadata.get("TransferSyntax", ExplicitVRLittleEndian),
                        attachment=info.attachments.get(DICOM_ATTACHMENT))


def store_contexts(server: Server, operations: list[SubOperation]
                   ) -> list[PresentationContext]:
    """Propose each instance's own syntax, and explicit/implicit little endian besides.

    Uncompressed instances can be re-encoded in whichever the peer picks; a compressed
    one gets a context of its own syntax, and another of ``DicomScuPreferredTransferSyntax``
    and the uncompressed ones to be transcoded to when the peer refuses the first.
    """
    preferred = str(server.config["DicomScuPreferredTransferSyntax"])
    wanted: dict[tuple[str, tuple[str, ...]], None] = {}
    for op in operations:
        if op.transfer_syntax in CONVERTIBLE:
            wanted[op.sop_class, tuple(dict.fromkeys((op.transfer_syntax, *UNCOMPRESSED)))] = None
        else:
            wanted[op.sop_class, (op.transfer_syntax,)] = None
            wanted[op.sop_class, tuple(dict.fromkeys((preferred, *UNCOMPRESSED)))] = None
    if len(wanted) > MAX_CONTEXTS:
        log.warning("%d presentation contexts needed, %d proposed: instances of the others "
                    "will fail", len(wanted), MAX_CONTEXTS)
    return [build_context(sop_class, list(syntaxes))
            for sop_class, syntaxes in list(wanted)[:MAX_CONTEXTS]]


def load(server: Server, op: SubOperation) -> Dataset:
    """The dataset to send; one pynetdicom cannot send when the file is unreadable.

    That stand-in carries the SOP class and instance UIDs and no file meta, so that
    sending it fails and the instance is reported among the failed ones.
    """
    if op.dataset is not None:
        return op.dataset
    try:
        if op.attachment is None:
            raise LanthornError("the instance has no DICOM file")
        data = read_all(server.storage, op.attachment.uuid, op.attachment.compression)
        return pydicom.dcmread(io.BytesIO(data))
    except (LanthornError, OSError, zlib.error) as exc:
        log.error("instance %s cannot be sent: %s", phi(op.sop_instance), exc)
        stand_in = Dataset()
        stand_in.SOPClassUID, stand_in.SOPInstanceUID = op.sop_class, op.sop_instance
        return stand_in


def transcoding_allowed(server: Server, modality: Modality | None) -> bool:
    """Orthanc's rule: ``TranscodeDicomProtocol``, and ``AllowTranscoding`` of the peer
    when it is a known modality."""
    return bool(server.config["TranscodeDicomProtocol"]) and \
        (modality is None or modality.allows("Transcoding"))


def prepared(server: Server, association: Association, op: SubOperation,
             transcoding: bool) -> Dataset:
    """The dataset of one sub-operation, ready for ``association``: the one path of REST
    stores, store jobs, C-MOVE and C-GET sub-operations."""
    return fitted(server, association, load(server, op), transcoding)


def fitted(server: Server, association: Association, dataset: Dataset,
           transcoding: bool) -> Dataset:
    """The dataset in a transfer syntax the peer accepted for its SOP class: a
    compressed instance is transcoded (to ``DicomScuPreferredTransferSyntax`` first)
    when only other syntaxes were accepted, if ``transcoding`` is allowed."""
    meta = getattr(dataset, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    accepted = [c.transfer_syntax[0] for c in association.accepted_contexts
                if c.abstract_syntax == dataset.get("SOPClassUID")]
    if syntax is None or not accepted or syntax in accepted \
            or (syntax in CONVERTIBLE and CONVERTIBLE.intersection(accepted)):
        return dataset
    peer = association.acceptor if association.is_requestor else association.requestor
    if not transcoding:
        log.warning("instance %s is stored in %s, which %s did not accept, and transcoding "
                    "for it is off (AllowTranscoding or TranscodeDicomProtocol false)",
                    phi(dataset.get("SOPInstanceUID")), UID(syntax).name, peer.ae_title.strip())
        return dataset
    preferred = server.config["DicomScuPreferredTransferSyntax"]
    accepted.sort(key=lambda accepted_syntax: accepted_syntax != preferred)
    try:
        return pydicom.dcmread(io.BytesIO(transcode(server, dataset, accepted)))
    except LanthornError as exc:
        log.warning("instance %s cannot be transcoded for %s: %s",
                    phi(dataset.get("SOPInstanceUID")), peer.ae_title.strip(), exc)
        return dataset


def send(association: Association, dataset: Dataset, originator: tuple[str, int | None]
         ) -> str | None:
    """C-STORE one dataset; why it failed, or None when the peer stored it."""
    aet, message_id = originator
    try:
        status = association.send_c_store(dataset, originator_aet=aet or None,
                                          originator_id=message_id)
    except (ValueError, AttributeError, RuntimeError) as exc:  # no context, no meta, no link
        return str(exc)
    code = status.get("Status")
    if code is None:
        return "no answer (the association was aborted or timed out)"
    return None if code_to_category(code) in ("Success", "Warning") else f"status 0x{code:04X}"


def store(server: Server, modality: Modality, operations: list[SubOperation], *,
          originator: tuple[str, int | None] = ("", None), permissive: bool = False,
          after_each: Callable[[bool], None] | None = None,
          timeout: float | None = None) -> int:
    """Send instances over one association; the number that failed.

    Unless ``permissive``, the first failure stops the transfer with a NetworkError.
    ``after_each(stored)`` follows every instance (a job records its progress there);
    ``associate`` says what ``timeout`` overrides.
    """
    if not operations:
        return 0
    failed = 0
    transcoding = transcoding_allowed(server, modality)
    with associate(server, modality, store_contexts(server, operations),
                   timeout) as association:
        for op in operations:
            why = send(association, prepared(server, association, op, transcoding), originator)
            if why is not None:
                message = (f'C-STORE of {op.sop_instance} to modality "{modality.name}" '
                           f"failed: {why}")
                if not permissive:
                    raise NetworkError(message)
                log.warning(message)
                failed += 1
            if after_each is not None:
                after_each(why is None)
    return failed
