"""The one path every instance takes into Lanthorn: REST, C-STORE, STOW-RS and plugins.

parse once → plugin hooks (replace, veto) → write the file → one index transaction →
reply. Nothing is acknowledged before it is durable, and a failure at any step leaves
neither a row without its file nor (beyond a crash) a file without its row.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydicom.uid import UID

from .config import ConfigError
from .dicom import ParsedInstance, main_tag_values, pack_header, parse_instance
from .errors import BadFileFormat, LanthornError, Rejected
from .index.records import Attachment, NewInstance, StorageLimits
from .index.sql import orthanc_date
from .model import public_ids
from .pools import SharedPool
from .redact import phi
from .storage import COMPRESSION_NONE, COMPRESSION_ZLIB, compress, new_uuid
from .transcode import transcode
from .types import Origin, StoredInstance

if TYPE_CHECKING:
    from .config import Config
    from .server import Server

log = logging.getLogger(__name__)

#: Orthanc's content type of the DICOM file attachment.
DICOM_ATTACHMENT = 1
#: From this size on, a file's MD5 is computed on a helper thread (for smaller ones,
#: handing the work over costs more than it saves).
HASHED_BESIDE_BYTES = 64 << 10
_hashers = SharedPool(os.cpu_count() or 1, "lanthorn-md5")


@dataclass(frozen=True)
class BatchItem:
    """The outcome for one member of a batch (a ZIP upload): stored, or why not."""

    name: str
    stored: StoredInstance | None = None
    error: LanthornError | None = None


class Ingester:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.limits = storage_limits(server.config)

    def store(self, data: bytes, origin: Origin) -> StoredInstance:
        """Store one instance; raise BadFileFormat / Rejected with the reason."""
        return self.store_parsed(parse_instance(data), origin)

    def store_parsed(self, parsed: ParsedInstance, origin: Origin) -> StoredInstance:
        """Store an instance its caller already parsed (STOW-RS checks its study first)."""
        hook = self.server.plugins.hook
        replacement = hook.receive_instance(server=self.server, instance=parsed, origin=origin)
        if replacement is not None:
            parsed = parse_instance(replacement)
        parsed = self.transcoded(parsed)
        if False in hook.filter_incoming_instance(server=self.server, instance=parsed,
                                                  origin=origin):
            raise Rejected("A plugin refused this instance")
        stored = self._commit(parsed, origin)
        if stored.status == "Success":
            self.server.plugins.notify("on_stored_instance", server=self.server,
                                       instance=stored, dataset=parsed.dataset)
        return stored

    def transcoded(self, parsed: ParsedInstance) -> ParsedInstance:
        """``IngestTranscoding``: the instance in that syntax, or as received when it
        cannot be converted (with a warning, as Orthanc)."""
        config = self.server.config
        syntax = config["IngestTranscoding"]
        if not syntax or parsed.transfer_syntax == syntax:
            return parsed
        received = UID(parsed.transfer_syntax)  # one pydicom does not know: compressed
        compressed = not received.is_transfer_syntax or received.is_encapsulated
        if not config["IngestTranscodingOfCompressed" if compressed
                      else "IngestTranscodingOfUncompressed"]:
            return parsed
        try:
            data = transcode(self.server, parsed.dataset, [syntax])
        except LanthornError as exc:
            log.warning("instance %s is stored as received: %s", phi(parsed.uids[3]),
                        exc.message)
            return parsed
        return parse_instance(data)

    def _commit(self, parsed: ParsedInstance, origin: Origin) -> StoredInstance:
        server = self.server
        ids = public_ids(parsed.uids)
        overwrite = bool(server.config["OverwriteInstances"])
        # No look-up first: the index transaction decides about duplicates, and a
        # duplicate (rare) only costs writing a file that is then removed.
        attachment = self.write_file(parsed.data)
        now = time.time()
        try:
            outcome = server.index.store_instance(
                NewInstance(
                    public_ids=ids,
                    main_tags=main_tag_values(parsed.dataset, server.main_tags),
                    metadata=_metadata(parsed, origin, now),
                    attachment=attachment,
                    header=pack_header(parsed.header),
                    timestamp=now,
                ),
                overwrite=overwrite,
                limits=self.limits,
            )
        except BaseException:
            server.storage.remove(attachment.uuid)
            raise
        for uuid in (outcome.replaced_uuids if outcome.stored else [attachment.uuid]):
            server.storage.remove(uuid)
        return StoredInstance(ids, "Success" if outcome.stored else "AlreadyStored", parsed.uids)

    def write_file(self, data: bytes) -> Attachment:
        """Write the file, with the MD5s of its bytes and of what is stored.

        A large file is hashed on another core while this thread compresses, writes and
        flushes it (hashlib lets go of the interpreter lock as it hashes): a 0.5 MB CT's
        MD5 takes about 0.8 ms, a tenth of its C-STORE from one association.
        """
        uuid = new_uuid()
        md5 = _md5(data)
        if self.server.config["StorageCompression"]:
            stored, compression = compress(data), COMPRESSION_ZLIB
            stored_md5 = _md5(stored)
        else:
            stored, compression, stored_md5 = data, COMPRESSION_NONE, md5
        self.server.storage.write(uuid, stored)
        return Attachment(DICOM_ATTACHMENT, uuid, len(stored), len(data), compression,
                          stored_md5(), md5())

    def store_many(self, data: bytes, origin: Origin) -> Iterator[BatchItem]:
        """A ZIP archive member by member, or a single file; bad members are reported.

        A ZIP is recognised by its first bytes: ``zipfile.is_zipfile`` looks for an
        end record among the last bytes, which the pixels of a DICOM file may hold.
        """
        if not is_zip(data):
            yield self._attempt("", lambda: data, origin)
            return
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as exc:
            raise BadFileFormat(f"Cannot read this ZIP archive: {exc}") from None
        with archive:
            for member in archive.infolist():
                if not member.is_dir():
                    yield self._attempt(member.filename, lambda m=member: archive.read(m), origin)

    def _attempt(self, name: str, read: Callable[[], bytes], origin: Origin) -> BatchItem:
        try:
            data = read()
        except (zipfile.BadZipFile, zlib.error, OSError, RuntimeError) as exc:  # a corrupt member
            return BatchItem(name, error=BadFileFormat(f"Cannot read this ZIP member: {exc}"))
        try:
            return BatchItem(name, stored=self.store(data, origin))
        except LanthornError as exc:
            return BatchItem(name, error=exc)


#: The first bytes of a ZIP archive: a member's local header, or the end record of an
#: empty archive.
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")


def is_zip(data: bytes) -> bool:
    """Whether a file (or its first 132 bytes) is a ZIP archive rather than one DICOM
    file, whose 128-byte preamble is free but followed by ``DICM``."""
    return data.startswith(ZIP_SIGNATURES) and data[128:132] != b"DICM"


def storage_limits(config: Config) -> StorageLimits:
    """The quota of ``MaximumStorageSize`` / ``MaximumPatientCount`` and what a full
    storage does; a mode other than "Recycle" or "Reject" stops start-up."""
    mode = config["MaximumStorageMode"]
    if mode not in ("Recycle", "Reject"):
        raise ConfigError(f'MaximumStorageMode must be "Recycle" or "Reject", not "{mode}"')
    return StorageLimits(max(int(config["MaximumStorageSize"]), 0) * 1024 * 1024,
                         max(int(config["MaximumPatientCount"]), 0), mode == "Reject")


def _metadata(parsed: ParsedInstance, origin: Origin, now: float) -> dict[str, str]:
    """Orthanc's per-instance metadata."""
    values = {
        "ReceptionDate": orthanc_date(now),
        "Origin": origin.kind,
        "RemoteAET": origin.remote_aet,
        "RemoteIP": origin.remote_ip,
        "HttpUsername": origin.username,
    }
    if origin.called_aet:  # Orthanc records it only for the DICOM protocol
        values["CalledAET"] = origin.called_aet
    return {**values, **{k: v for k, v in file_metadata(parsed).items() if v is not None}}


def file_metadata(parsed: ParsedInstance) -> dict[str, str | None]:
    """The metadata that depend on the file alone (None: this file has no such value)."""
    offset = parsed.pixel_data_offset
    return {"TransferSyntax": parsed.transfer_syntax, "SopClassUid": parsed.sop_class,
            "PixelDataOffset": None if offset is None else str(offset)}


def _md5(data: bytes) -> Callable[[], str]:
    """The hex MD5 of ``data``, to be taken when needed; of a large file, computed
    meanwhile on the process's hashing threads."""
    if len(data) < HASHED_BESIDE_BYTES:
        digest = _hex_md5(data)
        return lambda: digest
    return _hashers.submit(_hex_md5, data).result


def _hex_md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()
