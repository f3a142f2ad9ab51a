"""Storage commitment requests that Lanthorn sent, and the reports answering them."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, select, update

from . import schema as s

if TYPE_CHECKING:
    from .sql import SqlIndex

Reference = list[str]  # [SOP class UID, SOP instance UID(, failure reason)]


@dataclass(frozen=True)
class CommitmentRecord:
    transaction_uid: str
    remote_aet: str
    status: str
    success: list[Reference]
    failures: list[Reference]


class CommitmentTable:
    def __init__(self, index: SqlIndex) -> None:
        self.index = index

    def create(self, transaction_uid: str, remote_aet: str, keep: int) -> None:
        """A pending request; the oldest beyond ``keep`` are forgotten."""
        table = s.storage_commitments
        with self.index.write() as conn:
            conn.execute(insert(table).values(
                transaction_uid=transaction_uid, remote_aet=remote_aet, status="Pending",
                success="[]", failures="[]", created=time.time()))
            old = select(table.c.transaction_uid).order_by(table.c.created.desc()).offset(keep)
            conn.execute(delete(table).where(table.c.transaction_uid.in_(old.scalar_subquery())))

    def report(self, transaction_uid: str, success: list[Reference],
               failures: list[Reference]) -> bool:
        """Record a report; False for a transaction Lanthorn did not start."""
        table = s.storage_commitments
        with self.index.write() as conn:
            return bool(conn.execute(update(table).where(
                table.c.transaction_uid == transaction_uid).values(
                status="Failure" if failures else "Success", success=json.dumps(success),
                failures=json.dumps(failures))).rowcount)

    def get(self, transaction_uid: str) -> CommitmentRecord | None:
        table = s.storage_commitments
        with self.index.read() as conn:
            row = conn.execute(select(table).where(
                table.c.transaction_uid == transaction_uid)).one_or_none()
        if row is None:
            return None
        return CommitmentRecord(row.transaction_uid, row.remote_aet, row.status,
                                json.loads(row.success), json.loads(row.failures))
