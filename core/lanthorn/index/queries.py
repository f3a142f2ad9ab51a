"""The queries table: answers of C-FIND requests to remote modalities (``/queries``)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select

from ..model import Level
from . import schema as s

if TYPE_CHECKING:
    from .sql import SqlIndex


@dataclass(frozen=True)
class QueryRecord:
    """A remote query and its answers; datasets as DICOM JSON (pydicom's to_json_dict)."""

    id: str
    modality: str
    level: Level
    query: dict[str, Any]
    answers: list[dict[str, Any]]
    created: float


class QueryTable:
    def __init__(self, index: SqlIndex) -> None:
        self.index = index

    def create(self, record: QueryRecord, keep: int) -> None:
        """Add a query, forgetting the oldest beyond the ``keep`` most recent."""
        with self.index.write() as conn:
            conn.execute(insert(s.queries).values(
                id=record.id, modality=record.modality, level=int(record.level),
                query=json.dumps(record.query), answers=json.dumps(record.answers),
                created=record.created or time.time()))
            old = select(s.queries.c.id).order_by(s.queries.c.created.desc()).offset(keep)
            conn.execute(delete(s.queries).where(s.queries.c.id.in_(old.scalar_subquery())))

    def get(self, query_id: str) -> QueryRecord | None:
        with self.index.read() as conn:
            row = conn.execute(select(s.queries).where(s.queries.c.id == query_id)).one_or_none()
        if row is None:
            return None
        return QueryRecord(row.id, row.modality, Level(row.level), json.loads(row.query),
                           json.loads(row.answers), row.created)

    def ids(self) -> list[str]:
        with self.index.read() as conn:
            return list(conn.scalars(select(s.queries.c.id).order_by(s.queries.c.created)))

    def delete(self, query_id: str) -> bool:
        with self.index.write() as conn:
            return bool(conn.execute(delete(s.queries).where(s.queries.c.id == query_id))
                        .rowcount)
