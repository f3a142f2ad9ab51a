"""Anonymize, then forward, in Python: each received instance is anonymized, the copy is
stored and sent to the modality "sample", and the original is deleted.

Copies are stored with origin "Plugins", which is how this plugin skips its own.
"""

from lanthorn import ChangeType, Level, Server, hookimpl
from lanthorn.index.records import Change
from lanthorn.modify import modified_file, parse_request
from lanthorn.rest.modalities import MODALITY
from lanthorn.types import Origin

DESTINATION = "sample"
ORIGIN = Origin("Plugins")


@hookimpl
def on_change(server: Server, change: Change) -> None:
    if change.change_type != ChangeType.NewInstance:
        return
    original = server.index.lookup(change.public_id, Level.INSTANCE)
    if original is None or server.index.metadata(original.id).get("Origin") == ORIGIN.kind:
        return  # gone already, or a copy made here
    request = parse_request(server, {"Replace": {"PatientName": "Anonymous"}, "Force": True},
                            anonymize=True, level=Level.INSTANCE, resource=change.public_id,
                            origin=ORIGIN)
    copy = server.ingest.store(modified_file(server, request, original), ORIGIN)
    MODALITY.submit(server, [copy.id], {"Modality": DESTINATION})
    server.delete(original)
