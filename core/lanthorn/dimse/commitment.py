"""Storage Commitment Push Model (PS3.4 J), both ways.

As SCP: a modality asks (N-ACTION) whether Lanthorn safely keeps some instances; the
answer comes later, as an N-EVENT-REPORT over a new association to that modality, sent
by a "StorageCommitmentScp" job (retried while the modality is unreachable).
As SCU: ``POST /modalities/{id}/storage-commitment`` sends the N-ACTION and the
modality's N-EVENT-REPORT, received by the listener, completes the transaction's
report (``/storage-commitment/{id}``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import build_context, build_role

from ..errors import DimseFailure
from ..jobs import JobContext, JobType
from ..model import Level
from .access import AccessRules, modality_named
from .scu import SOP_INSTANCE_UID, associate

if TYPE_CHECKING:
    from pynetdicom.events import Event

    from ..server import Server
    from .access import Modality

log = logging.getLogger(__name__)

PUSH_MODEL = "1.2.840.10008.1.20.1"
PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"  # the well-known SOP instance
REQUEST_COMMITMENT = 1  # Action Type ID
ALL_COMMITTED, SOME_FAILED = 1, 2  # Event Type IDs
NO_SUCH_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
SUCCESS, REFUSED, INVALID = 0x0000, 0x0124, 0x0115  # not authorized, invalid argument
SCP_JOB = "StorageCommitmentScp"


def references(dataset: Dataset, sequence: str = "ReferencedSOPSequence") -> list[list[str]]:
    """``[[SOP class, SOP instance], ...]`` of a sequence of references."""
    return [[str(item.get("ReferencedSOPClassUID", "")),
             str(item.get("ReferencedSOPInstanceUID", ""))]
            for item in dataset.get(sequence, [])]


def stored_references(server: Server, ids: Sequence[int]) -> list[list[str]]:
    """``[[SOP class, SOP instance], ...]`` of stored instances (index IDs), from the
    index: what a commitment request names."""
    return [[info.metadata.get("SopClassUid", ""), info.main_tags.get(SOP_INSTANCE_UID, "")]
            for info in server.index.describe(ids)]


def _sequence(refs: list[list[str]], with_reason: bool = False) -> list[Dataset]:
    items = []
    for ref in refs:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = ref[0], ref[1]
        if with_reason:
            item.FailureReason = int(ref[2])
        items.append(item)
    return items


# -- SCP: a modality asks Lanthorn --------------------------------------------------------

def serve_n_action(event: Event, server: Server, rules: AccessRules
                   ) -> tuple[int, Dataset | None]:
    """EVT_N_ACTION: accept the request and queue the job that will report."""
    requestor = event.assoc.requestor
    calling = requestor.ae_title.strip()
    if _refused(event, rules, "NAction", event.request.RequestedSOPClassUID, "request"):
        return REFUSED, None
    modality = rules.caller(calling, requestor.address)
    try:
        request = event.action_information
        transaction = str(request.TransactionUID)
        instances = references(request)
    except Exception as exc:  # undecodable or incomplete action information
        log.warning("storage commitment from %s refused: %s", calling, exc)
        return INVALID, None
    if modality is None:
        log.warning("storage commitment from %s refused: it is not in DicomModalities, so "
                    "the report cannot be sent", calling)
        return REFUSED, None
    server.jobs.submit(SCP_JOB, {"Modality": modality.name, "TransactionUID": transaction,
                                 "Instances": instances},
                       content={"RemoteAet": modality.aet, "TransactionUid": transaction,
                                "InstancesCount": len(instances)})
    log.info("storage commitment %s from %s: %d instances", transaction, calling,
             len(instances))
    return SUCCESS, None


def _refused(event: Event, rules: AccessRules, permission: str, sop_class: str,
             what: str) -> bool:
    """Whether the peer may not send this storage commitment message (logged why)."""
    requestor = event.assoc.requestor
    calling = requestor.ae_title.strip()
    refusal = rules.refusal(permission, calling, requestor.address)
    if refusal is None and sop_class == PUSH_MODEL:
        return False
    log.warning("storage commitment %s from %s refused: %s", what, calling,
                refusal or "not the Storage Commitment Push Model")
    return True


def _verdicts(server: Server, instances: list[list[str]]) -> tuple[list, list]:
    """Which referenced instances Lanthorn keeps, and why the others fail."""
    success, failures = [], []
    for sop_class, sop_instance in instances:
        found = [r for r in server.index.lookup_identifier(sop_instance)
                 if r.level == Level.INSTANCE]
        if not found:
            failures.append([sop_class, sop_instance, NO_SUCH_INSTANCE])
        elif server.index.metadata(found[0].id).get("SopClassUid") != sop_class:
            failures.append([sop_class, sop_instance, CLASS_INSTANCE_CONFLICT])
        else:
            success.append([sop_class, sop_instance])
    return success, failures


def _report(context: JobContext) -> None:
    """The job: check the instances, then send the N-EVENT-REPORT to the modality."""
    server, parameters = context.server, context.parameters
    modality = modality_named(server, parameters["Modality"])
    success, failures = _verdicts(server, parameters["Instances"])
    report = Dataset()
    report.TransactionUID = parameters["TransactionUID"]
    if success:
        report.ReferencedSOPSequence = _sequence(success)
    if failures:
        report.FailedSOPSequence = _sequence(failures, with_reason=True)
    context.content = {**context.content, "SuccessCount": len(success),
                       "FailuresCount": len(failures)}
    contexts = [build_context(PUSH_MODEL)]
    roles = [build_role(PUSH_MODEL, scp_role=True)]
    with associate(server, modality, contexts, ext_neg=roles) as association:
        status, _ = association.send_n_event_report(
            report, SOME_FAILED if failures else ALL_COMMITTED, PUSH_MODEL,
            PUSH_MODEL_INSTANCE)
    code = status.get("Status") if status else None
    if code != SUCCESS:
        raise DimseFailure(f'modality "{modality.name}" answered the storage commitment '
                           f"report with status {code}")


SCP_JOB_TYPE = JobType(SCP_JOB, _report, retry=True)


# -- SCU: Lanthorn asks a modality -------------------------------------------------------

def request_commitment(server: Server, modality: Modality, instances: list[list[str]],
                       timeout: float | None = None) -> str:
    """Send the N-ACTION; the transaction UID, whose report arrives later."""
    transaction = generate_uid()
    request = Dataset()
    request.TransactionUID = transaction
    request.ReferencedSOPSequence = _sequence(instances)
    server.index.commitments.create(transaction, modality.aet,
                                    int(server.config["StorageCommitmentReportsSize"]))
    with associate(server, modality, [build_context(PUSH_MODEL)], timeout) as association:
        status, _ = association.send_n_action(request, REQUEST_COMMITMENT, PUSH_MODEL,
                                              PUSH_MODEL_INSTANCE)
    code = status.get("Status") if status else None
    if code != SUCCESS:
        raise DimseFailure(f'modality "{modality.name}" refused the storage commitment '
                           f"request (status {code})")
    return transaction


def serve_n_event_report(event: Event, server: Server, rules: AccessRules
                         ) -> tuple[int, Dataset | None]:
    """EVT_N_EVENT_REPORT: a modality reports on a commitment Lanthorn asked for."""
    calling = event.assoc.requestor.ae_title.strip()
    if _refused(event, rules, "EventReport", event.request.AffectedSOPClassUID, "report"):
        return REFUSED, None
    try:
        report = event.event_information
        transaction = str(report.TransactionUID)
        failures = [[*ref, int(item.get("FailureReason", 0x0110))] for ref, item in
                    zip(references(report, "FailedSOPSequence"),
                        report.get("FailedSOPSequence", []), strict=True)]
        success = references(report)
    except Exception as exc:
        log.warning("storage commitment report from %s refused: %s", calling, exc)
        return INVALID, None
    if not server.index.commitments.report(transaction, success, failures):
        log.warning("storage commitment report from %s for unknown transaction %s",
                    calling, transaction)
        return INVALID, None
    return SUCCESS, None
