"""Reconstruction: read stored files again and rewrite what the index took from them.

After an index upgrade (new main tags), a manual repair, or children whose parent tags
disagree, ``reconstruct`` makes the index match the files: each instance's main tags (and
its ancestors', so the last instance read sets the parents' values), its file-derived
metadata and its saved header. With ``files``, each file is first rewritten as ingest
would write it today (``IngestTranscoding``, ``StorageCompression``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .dicom import main_tag_values, pack_header, parse_instance
from .ingest import DICOM_ATTACHMENT, file_metadata
from .model import Level
from .storage import read_all

if TYPE_CHECKING:
    from .index.records import Attachment
    from .server import Server


def reconstruct(server: Server, resource_id: int, *, files: bool = False) -> None:
    """Reconstruct every instance below a resource (or the instance itself)."""
    for instance_id in server.index.descendants(resource_id, Level.INSTANCE):
        reconstruct_instance(server, instance_id, files=files)


def reconstruct_all(server: Server, *, files: bool = False) -> None:
    for patient_id, _ in server.index.list_resources(Level.PATIENT):
        reconstruct(server, patient_id, files=files)


def reconstruct_instance(server: Server, instance_id: int, *, files: bool = False) -> None:
    attachment = server.index.attachment(instance_id, DICOM_ATTACHMENT)
    if attachment is None:  # deleted meanwhile, or a resource without a file
        return
    parsed = parse_instance(read_all(server.storage, attachment.uuid, attachment.compression))
    if files:
        parsed = server.ingest.transcoded(parsed)
        _replace_file(server, instance_id, attachment, server.ingest.write_file(parsed.data))
    server.index.reconstruct_instance(instance_id,
                                      main_tag_values(parsed.dataset, server.main_tags),
                                      file_metadata(parsed), pack_header(parsed.header))


def _replace_file(server: Server, instance_id: int, old: Attachment, new: Attachment) -> None:
    """Point the instance at its new file; the loser of a race with another writer goes."""
    replaced = server.index.replace_attachment_file(instance_id, old.uuid, new)
    server.storage.remove(old.uuid if replaced else new.uuid)
