"""API tokens: their digests, owners, roles and expiry (``lanthorn.tokens`` decides)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, select

from . import schema as s

if TYPE_CHECKING:
    from sqlalchemy import Row

    from .sql import SqlIndex


@dataclass(frozen=True)
class TokenRecord:
    id: str
    user: str
    role: str | None  # None: the user's own roles
    description: str
    created: float
    expires: float | None


class TokenTable:
    def __init__(self, index: SqlIndex) -> None:
        self.index = index

    def add(self, record: TokenRecord, digest: str) -> None:
        with self.index.write() as conn:
            conn.execute(insert(s.api_tokens).values(
                id=record.id, digest=digest, username=record.user, role=record.role,
                description=record.description, created=record.created,
                expires=record.expires))

    def find(self, digest: str) -> TokenRecord | None:
        """The token with this digest, expired or not."""
        with self.index.read() as conn:
            row = conn.execute(_SELECT.where(s.api_tokens.c.digest == digest)).first()
        return _record(row) if row is not None else None

    def list(self, user: str | None = None) -> list[TokenRecord]:
        """Every token, or one user's, oldest first."""
        query = _SELECT.order_by(s.api_tokens.c.created, s.api_tokens.c.id)
        if user is not None:
            query = query.where(s.api_tokens.c.username == user)
        with self.index.read() as conn:
            return [_record(row) for row in conn.execute(query)]

    def revoke(self, token_id: str, user: str | None = None) -> bool:
        """Delete a token (only if ``user`` owns it, when given); False if there was none."""
        table = s.api_tokens
        condition = table.c.id == token_id
        if user is not None:
            condition &= table.c.username == user
        with self.index.write() as conn:
            return conn.execute(delete(table).where(condition)).rowcount > 0


_SELECT = select(s.api_tokens.c.id, s.api_tokens.c.username, s.api_tokens.c.role,
                 s.api_tokens.c.description, s.api_tokens.c.created, s.api_tokens.c.expires)


def _record(row: Row) -> TokenRecord:
    return TokenRecord(*row)
