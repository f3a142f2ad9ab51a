"""Auto-routing in Python: every received instance goes to the modality "sample".

Load with ``"Plugins": ["autorouting.py"]``. The send is a store job: network
failures are retried, and a failed send stays in ``/jobs``, where it can be resubmitted.
"""

from contextlib import suppress

from lanthorn import ChangeType, Server, UnknownResource, hookimpl
from lanthorn.index.records import Change
from lanthorn.rest.modalities import MODALITY

DESTINATION = "sample"


@hookimpl
def on_change(server: Server, change: Change) -> None:
    if change.change_type != ChangeType.NewInstance:
        return
    with suppress(UnknownResource):  # deleted before its turn came: nothing to send
        MODALITY.submit(server, [change.public_id], {"Modality": DESTINATION})
