"""Statements of the ingest hot path, run on the database driver's own cursor.

``Connection.execute`` spends about 40 µs of bookkeeping on each statement (cache key,
parameter processing, result wrapping), several times what SQLite takes to run it, and
an ingest runs about ten. A ``Prepared`` statement is compiled once per dialect and its
parameters go straight to the driver, inside the connection's transaction.

What this skips: SQLAlchemy's Python-side column defaults and type processing (pass
every column, as plain ints, floats, strings and bytes) and its execution events (a
backend that reacts to writes does so in the database: the postgres plugin's trigger).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.sql import Executable

Row = Mapping[str, Any]


class Prepared:
    """One statement, its parameters given by name as to ``Connection.execute``."""

    def __init__(self, statement: Executable, columns: Sequence[str] = ()) -> None:
        """``columns``: those an INSERT sets (all of the table's, otherwise)."""
        self._statement = statement
        self._columns = list(columns) or None
        #: Per dialect: the SQL, and the parameters' names in order (None: by name).
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None]] = {}

    def run(self, conn: Connection, values: Row) -> Any:
        """Execute once; the driver's cursor, for the rows it returns."""
        sql, names = self._sql(conn.dialect)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(sql, values if names is None else [values[n] for n in names])
        return cursor

    def run_many(self, conn: Connection, rows: Sequence[Row]) -> None:
        if not rows:
            return
        sql, names = self._sql(conn.dialect)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.executemany(sql, rows if names is None
                           else [[row[n] for n in names] for row in rows])

    def scalar(self, conn: Connection, values: Row) -> Any:
        return self.run(conn, values).fetchone()[0]

    def _sql(self, dialect: Dialect) -> tuple[str, tuple[str, ...] | None]:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            statement = self._statement.compile(dialect=dialect, column_keys=self._columns)
            names = tuple(statement.positiontup or ()) if statement.positional else None
            compiled = self._compiled[dialect.name] = (statement.string, names)
        return compiled
