"""The jobs table: every state change of a job is one short transaction.

Any process may submit, list and control jobs; only the runner (``lanthorn.jobs``)
claims them. A claim is a conditional update, so two runners never start one job.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, or_, select, update

from . import schema as s

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy import Row

    from .sql import SqlIndex

#: Orthanc's job states; "Retry" waits for ``next_attempt``.
PENDING, RUNNING, SUCCESS, FAILURE, PAUSED, RETRY = (
    "Pending", "Running", "Success", "Failure", "Paused", "Retry")
FINISHED = (SUCCESS, FAILURE)
_JSON = ("parameters", "checkpoint", "content", "outputs")


@dataclass(frozen=True)
class JobRecord:
    id: str
    job_type: str
    state: str
    priority: int
    progress: float
    parameters: dict[str, Any]
    checkpoint: dict[str, Any]
    content: dict[str, Any]
    outputs: dict[str, Any]
    error_code: int
    error_details: str
    request: str | None
    owner: str | None
    attempts: int
    next_attempt: float | None
    created: float
    updated: float
    completed: float | None
    runtime: float


class JobTable:
    """Job rows of one index; JSON columns are decoded into dicts."""

    def __init__(self, index: SqlIndex) -> None:
        self.index = index

    def create(self, job_id: str, job_type: str, parameters: dict[str, Any],
               content: dict[str, Any], priority: int = 0) -> None:
        now = time.time()
        with self.index.write() as conn:
            conn.execute(insert(s.jobs).values(
                id=job_id, job_type=job_type, state=PENDING, priority=priority, progress=0.0,
                parameters=json.dumps(parameters), checkpoint="{}",
                content=json.dumps(content), outputs="{}", error_code=0, error_details="",
                attempts=0, created=now, updated=now, runtime=0.0))

    def get(self, job_id: str) -> JobRecord | None:
        with self.index.read() as conn:
            row = conn.execute(select(s.jobs).where(s.jobs.c.id == job_id)).one_or_none()
        return _record(row) if row else None

    def all(self) -> list[JobRecord]:
        with self.index.read() as conn:
            rows = conn.execute(select(s.jobs).order_by(s.jobs.c.created, s.jobs.c.id))
            return [_record(row) for row in rows]

    def update(self, job_id: str, *, expect: Sequence[str] = (), run_by: str | None = None,
               unless_request: str | None = None, **values: Any) -> bool:
        """Change a job if it is in one of the ``expect`` states (and, when ``run_by`` is
        given, still owned by that process; when ``unless_request`` is given, not asked
        for that); False if it was not."""
        condition = [s.jobs.c.id == job_id]
        if expect:
            condition.append(s.jobs.c.state.in_(expect))
        if run_by is not None:
            condition.append(s.jobs.c.owner == run_by)
        if unless_request is not None:
            condition.append(or_(s.jobs.c.request.is_(None),
                                 s.jobs.c.request != unless_request))
        encoded = {k: json.dumps(v) if k in _JSON else v for k, v in values.items()}
        with self.index.write() as conn:
            return bool(conn.execute(update(s.jobs).where(*condition)
                                     .values(updated=time.time(), **encoded)).rowcount)

    def claim_next(self, owner: str) -> JobRecord | None:
        """Take the most urgent pending job for ``owner`` (priority, then age)."""
        with self.index.write() as conn:
            job_id = conn.scalar(select(s.jobs.c.id).where(s.jobs.c.state == PENDING)
                                 .order_by(s.jobs.c.priority.desc(), s.jobs.c.created)
                                 .limit(1))
            if job_id is None:
                return None
            now = time.time()
            conn.execute(update(s.jobs).where(s.jobs.c.id == job_id).values(
                state=RUNNING, owner=owner, updated=now,
                attempts=s.jobs.c.attempts + 1))
            row = conn.execute(select(s.jobs).where(s.jobs.c.id == job_id)).one()
        return _record(row)

    def requeue(self, owner: str, *, due_before: float) -> int:
        """Called by the lease holder ``owner``: jobs running in another process (which
        lost the lease, so died) and retries whose time has come go back to pending."""
        now = time.time()
        with self.index.write() as conn:
            orphans = conn.execute(update(s.jobs).where(
                s.jobs.c.state == RUNNING, s.jobs.c.owner != owner)
                .values(state=PENDING, owner=None, updated=now)).rowcount
            due = conn.execute(update(s.jobs).where(
                s.jobs.c.state == RETRY, s.jobs.c.next_attempt <= due_before)
                .values(state=PENDING, next_attempt=None, updated=now)).rowcount
        return orphans + due

    def delete(self, job_ids: Sequence[str]) -> None:
        with self.index.write() as conn:
            conn.execute(delete(s.jobs).where(s.jobs.c.id.in_(job_ids)))

    def finished_beyond(self, keep: int) -> list[JobRecord]:
        """Finished jobs older than the ``keep`` most recent ones: the history to prune."""
        with self.index.read() as conn:
            rows = conn.execute(select(s.jobs).where(s.jobs.c.state.in_(FINISHED))
                                .order_by(s.jobs.c.completed.desc(), s.jobs.c.id)
                                .offset(keep))
            return [_record(row) for row in rows]


def _record(row: Row) -> JobRecord:
    values = row._asdict()
    for key in _JSON:
        values[key] = json.loads(values[key])
    return JobRecord(**values)
