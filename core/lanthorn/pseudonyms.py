"""Persistent pseudonyms: a returning patient gets the same anonymized identity.

Orthanc gives every anonymization a new random PatientID, so two studies of one patient
anonymized a month apart look like two patients. With ``PersistentPseudonyms`` (in the
configuration or a request), Lanthorn keeps, per *scope* (a research project, say), the
PatientID and PatientName it gave each original PatientID, and optionally every new UID
(so re-anonymizing a study yields the same study). The table links pseudonyms to real
identities: it is PHI, kept in the index, and only an administrator route reads it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom.uid import generate_uid

from .errors import BadRequest

if TYPE_CHECKING:
    from .index.sql import SqlIndex

PATIENT_ID, PATIENT_NAME, UID = "PatientID", "PatientName", "UID"


@dataclass(frozen=True)
class PseudonymPolicy:
    """``scope`` separates projects; ``uids`` also keeps the UID mapping."""

    scope: str = ""
    uids: bool = False


def parse_policy(value: Any) -> PseudonymPolicy | None:
    """``PersistentPseudonyms``: false, true, or ``{"Scope": "...", "Uids": true}``."""
    if value is None or value is False:
        return None
    if value is True:
        return PseudonymPolicy()
    if isinstance(value, dict) and set(value) <= {"Scope", "Uids"} and \
            isinstance(value.get("Scope", ""), str) and isinstance(value.get("Uids", False), bool):
        return PseudonymPolicy(value.get("Scope", ""), value.get("Uids", False))
    raise BadRequest('"PersistentPseudonyms" must be true, false or an object with "Scope" '
                     '(a string) and "Uids" (a boolean)')


class Pseudonyms:
    """The pseudonyms of one scope; a new one is stored the first time it is needed."""

    def __init__(self, index: SqlIndex, policy: PseudonymPolicy) -> None:
        self.index = index
        self.policy = policy

    def patient(self, patient_id: str) -> tuple[str, str]:
        """The (PatientID, PatientName) that replace this original PatientID."""
        new_id = self.index.pseudonym(self.policy.scope, PATIENT_ID, patient_id, patient_id,
                                      lambda: str(uuid.uuid4()))
        name = self.index.pseudonym(
            self.policy.scope, PATIENT_NAME, patient_id, patient_id,
            lambda: f"Anonymized{self.index.next_counter('AnonymizedPatients')}")
        return new_id, name

    def uid(self, original: str, patient_id: str) -> str:
        return self.index.pseudonym(self.policy.scope, UID, original, patient_id, generate_uid)
