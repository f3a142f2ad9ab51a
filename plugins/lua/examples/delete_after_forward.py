"""Delete after forward, in Python: each received instance is sent to the modality
"sample" and deleted here once the peer has accepted it.

The job type reuses the core's C-STORE sending (retries on network failures, progress,
the report), adding the deletion at the end; an instance the peer refused is kept.
"""

from collections.abc import Callable
from contextlib import suppress
from typing import Any

from lanthorn import ChangeType, JobType, Server, UnknownResource, hookimpl
from lanthorn.index.records import Change
from lanthorn.rest.modalities import send_to_modality, store_report
from lanthorn.rest.sending import Destination

DESTINATION = "sample"


def send_then_delete(server: Server, parameters: dict[str, Any], checkpoint: dict[str, Any],
                     progress: Callable[[float], None] | None) -> None:
    send_to_modality(server, parameters, checkpoint, progress)
    if checkpoint.get("Failed", 0) == 0:
        for public_id in parameters["Resources"]:
            found = server.index.lookup(public_id)
            if found is not None:
                server.delete(found)


FORWARD = Destination("ForwardThenDelete", send_then_delete, store_report)


@hookimpl
def register_job_types(server: Server) -> list[JobType]:
    return [FORWARD.job()]


@hookimpl
def on_change(server: Server, change: Change) -> None:
    if change.change_type != ChangeType.NewInstance:
        return
    with suppress(UnknownResource):  # deleted before its turn came: nothing to send
        FORWARD.submit(server, [change.public_id], {"Modality": DESTINATION})
