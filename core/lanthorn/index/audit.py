"""The audit_log table: entries written in batches, searched by the admin route."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select

from . import schema as s

if TYPE_CHECKING:
    from .sql import SqlIndex


@dataclass(frozen=True)
class AuditEntry:
    """One thing someone did. ``who`` is a user or token name, or a calling AET; None
    when no one was identified (a refused request)."""

    at: float
    who: str | None
    via: str
    remote_ip: str
    action: str
    level: str | None = None
    resource: str | None = None
    status: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    seq: int = 0


@dataclass(frozen=True)
class AuditFilter:
    who: str | None = None
    action: str | None = None
    resource: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100


class AuditTable:
    def __init__(self, index: SqlIndex) -> None:
        self.index = index

    def add(self, entries: list[AuditEntry]) -> None:
        """One transaction, one multi-row statement, for a whole batch."""
        rows = [{"at": e.at, "who": e.who, "via": e.via, "remote_ip": e.remote_ip,
                 "action": e.action, "level": e.level, "resource": e.resource,
                 "status": e.status, "details": json.dumps(e.details)} for e in entries]
        with self.index.write() as conn:
            conn.execute(insert(s.audit_log), rows)

    def search(self, where: AuditFilter) -> list[AuditEntry]:
        """Matching entries, the most recent first."""
        c = s.audit_log.c
        conditions = [column == value for column, value in (
            (c.who, where.who), (c.action, where.action), (c.resource, where.resource))
            if value is not None]
        if where.since is not None:
            conditions.append(c.at >= where.since)
        if where.until is not None:
            conditions.append(c.at < where.until)
        query = select(s.audit_log).where(*conditions).order_by(c.seq.desc()).limit(where.limit)
        with self.index.read() as conn:
            rows = conn.execute(query).all()
        return [AuditEntry(row.at, row.who, row.via, row.remote_ip, row.action, row.level,
                           row.resource, row.status, json.loads(row.details), row.seq)
                for row in rows]

    def purge(self, before: float) -> int:
        """Forget entries older than ``before``; how many were."""
        with self.index.write() as conn:
            return conn.execute(delete(s.audit_log).where(s.audit_log.c.at < before)).rowcount
