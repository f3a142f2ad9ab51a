"""Reject by modality in Python: only CT images are stored, from any sender.

The sender gets HTTP 403 or a DICOM refusal, with the reason.
"""

from lanthorn import Rejected, Server, hookimpl
from lanthorn.dicom import ParsedInstance
from lanthorn.types import Origin

ACCEPTED = {"CT"}


@hookimpl
def filter_incoming_instance(server: Server, instance: ParsedInstance,
                             origin: Origin) -> bool | None:
    modality = instance.dataset.get("Modality", "")
    if modality not in ACCEPTED:
        raise Rejected(f'modality "{modality}" is not accepted here')
    return None
