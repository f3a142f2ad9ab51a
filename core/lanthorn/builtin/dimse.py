"""The core's answers to DICOM queries and retrieves (overridable), and a check of the
DICOM network options at start-up."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..dimse.access import parse_modalities
from ..dimse.commitment import SCP_JOB_TYPE
from ..dimse.find import core_find
from ..dimse.retrieve import core_retrieve
from ..dimse.scp import RUNTIME_SETTINGS, accepted_syntaxes, set_listener_setting
from ..dimse.tls import listener_context
from ..plugins import hookimpl

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from ..jobs import JobType
    from ..server import Server
    from ..types import DimseRequest

log = logging.getLogger(__name__)


@hookimpl
def startup(server: Server) -> None:
    parse_modalities(server.config)  # a malformed DicomModalities entry stops start-up
    accepted_syntaxes(server)  # so does an AcceptedTransferSyntaxes matching nothing
    listener_context(server.config)  # and DICOM TLS without its certificates
    if not server.index.live_lease_holders():  # a fresh start forgets the REST changes
        for name in RUNTIME_SETTINGS:
            set_listener_setting(server, name, None)


@hookimpl
def register_job_types(server: Server) -> list[JobType]:
    return [SCP_JOB_TYPE]


@hookimpl(trylast=True)
def handle_c_find(server: Server, request: DimseRequest) -> Iterator[Dataset]:
    return core_find(server, request)


@hookimpl(trylast=True)
def handle_c_move(server: Server, request: DimseRequest) -> list[str]:
    return core_retrieve(server, request)


@hookimpl(trylast=True)
def handle_c_get(server: Server, request: DimseRequest) -> list[str]:
    return core_retrieve(server, request)
