"""Statements of the hot paths, run on the database driver's own cursor.

``Connection.execute`` spends about 40 µs of bookkeeping on each statement (cache key,
parameter processing, result wrapping), several times what SQLite takes to run it; an
ingest runs about ten, and a C-FIND answer reads a few ``IN`` lists of IDs (where it
was over 100 µs a statement). A ``Prepared`` statement is compiled once per dialect
(and per length of its list of IDs) and its parameters go straight to the driver,
inside the connection's transaction; rows come back as the driver's tuples.

What this skips: SQLAlchemy's Python-side column defaults and type processing (pass
every column, as plain ints, floats, strings and bytes) and its execution events (a
backend that reacts to writes does so in the database: the postgres plugin's trigger).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, Dialect
from sqlalchemy.sql import Executable

Row = Mapping[str, Any]


class Prepared:
    """One statement, its parameters given by name as to ``Connection.execute``."""

    def __init__(self, statement: Executable, columns: Sequence[str] = (), *,
                 expanding: str | None = None) -> None:
        """``columns``: those an INSERT sets (all of the table's, otherwise);
        ``expanding``: the name of an ``IN`` parameter whose value is a list."""
        self._statement = statement
        self._columns = list(columns) or None
        self._expanding = expanding
        #: Per dialect and list length.
        self._compiled: dict[tuple[str, int], _Compiled] = {}

    def run(self, conn: Connection, values: Row) -> Any:
        """Execute once; the driver's cursor, for the rows it returns."""
        if self._expanding:
            values = {**values, self._expanding: _padded(values[self._expanding])}
        compiled = self._sql(conn.dialect, values)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(compiled.sql, self._driver_values(values, compiled))
        return cursor

    def run_many(self, conn: Connection, rows: Sequence[Row]) -> None:
        if not rows:
            return
        compiled = self._sql(conn.dialect, rows[0])
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.executemany(compiled.sql, [self._driver_values(row, compiled) for row in rows])

    def scalar(self, conn: Connection, values: Row) -> Any:
        return self.run(conn, values).fetchone()[0]

    def _sql(self, dialect: Dialect, values: Row) -> _Compiled:
        count = len(values[self._expanding]) if self._expanding else 0
        compiled = self._compiled.get((dialect.name, count))
        if compiled is None:
            statement = self._statement
            if self._expanding:  # rendered with this many placeholders, named ids_1...
                statement = statement.params(values)  # type: ignore[attr-defined]
            done = statement.compile(dialect=dialect, column_keys=self._columns,
                                     compile_kwargs={"render_postcompile": bool(self._expanding)})
            names = tuple(done.positiontup or ()) if done.positional else None
            # (SQLAlchemy cannot list them once it rendered an expanding list.)
            constants = {} if self._expanding else \
                {k: v for k, v in done.params.items() if k not in values}
            compiled = self._compiled[(dialect.name, count)] = _Compiled(done.string, names,
                                                                         constants)
        return compiled

    def _driver_values(self, values: Row, compiled: _Compiled) -> Any:
        if self._expanding:
            listed = values[self._expanding]
            values = {**values, **{f"{self._expanding}_{i}": value
                                   for i, value in enumerate(listed, start=1)}}
        if compiled.constants:
            values = {**compiled.constants, **values}
        return values if compiled.names is None else [values[n] for n in compiled.names]


class _Compiled(NamedTuple):
    sql: str
    names: tuple[str, ...] | None  # the parameters in order (None: by name)
    constants: dict[str, Any]  # values the statement holds (SQLite's LIMIT -1)


def _padded(values: Sequence[Any]) -> list[Any]:
    """An ``IN`` list made as long as the next power of two by repeating its last value
    (which matches nothing more): a few compiled lengths serve every list."""
    length = 1 << max(len(values) - 1, 0).bit_length()
    return [*values, *[values[-1]] * (length - len(values))] if values else []
