"""The PostgreSQL engine: a connection pool whose transactions keep the index consistent
when several Lanthorn processes, on several machines, share one database.

Isolation, in one paragraph (the README says more):

- a *write* transaction (``SqlIndex.write``, migrations) first takes one cluster-wide
  transaction-level advisory lock, then runs in READ COMMITTED. Writers therefore
  queue exactly as on SQLite (``BEGIN IMMEDIATE``), every statement after the lock sees
  every earlier commit, change-log sequence numbers are committed in order (a consumer
  reading ``seq > cursor`` never skips a late commit), and no write can fail with a
  serialization failure or a unique violation caused by a concurrent writer;
- a *read* transaction is REPEATABLE READ, READ ONLY: one snapshot, like a SQLite read
  transaction in WAL mode. Read-only transactions never fail on serialization.
"""

from __future__ import annotations

import logging

from psycopg import IsolationLevel
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError

from .settings import Settings

log = logging.getLogger(__name__)

#: The advisory lock every writer takes ("LNTH" in ASCII), shared by all Lanthorn
#: processes on the database; other applications on the same database must not use it.
WRITER_LOCK = 0x4C4E5448

#: Trigram indexes: ``LIKE '%abc%'`` and ``'abc%'`` on any collation, for wildcard
#: matching (the B-tree on (tag, value) only serves prefixes under the C collation).
TRIGRAM_INDEXES = {
    "ix_main_tags_value_trgm": "main_tags USING gin (value gin_trgm_ops)",
    "ix_main_tags_norm_trgm": "main_tags USING gin (norm gin_trgm_ops)",
}


def postgres_engine(settings: Settings) -> Engine:
    """A connection pool. No ping before each use (a round trip per transaction): when
    the server drops connections (a restart), the statement that finds out fails and
    SQLAlchemy replaces every pooled connection."""
    return create_engine(settings.url, pool_size=settings.maximum_connections // 2,
                         max_overflow=settings.maximum_connections // 2, pool_recycle=3600)


def index_engine(settings: Settings) -> Engine:
    """An engine whose transactions follow the isolation rules above."""
    engine = postgres_engine(settings)

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # psycopg opens the transaction with the next statement, as one
        # "BEGIN ISOLATION LEVEL ..." command: no extra round trip for the settings.
        dbapi = connection.connection.dbapi_connection
        write = bool(connection.get_execution_options().get("lanthorn_write"))
        dbapi.isolation_level = IsolationLevel.READ_COMMITTED if write \
            else IsolationLevel.REPEATABLE_READ
        dbapi.read_only = not write
        if write:
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITER_LOCK})")

    return engine


def add_trigram_indexes(engine: Engine) -> bool:
    """Create the ``pg_trgm`` indexes if the extension is available to this user.

    Not part of the shared Alembic schema: SQLite has no equivalent, and a database
    where the extension cannot be created still works (wildcards are slower). Returns
    whether the indexes exist.
    """
    try:
        with engine.connect().execution_options(lanthorn_write=True) as conn, conn.begin():
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
            for name, target in TRIGRAM_INDEXES.items():
                conn.execute(text(f"CREATE INDEX IF NOT EXISTS {name} ON {target}"))
    except DBAPIError as exc:
        log.warning("pg_trgm is not available (%s); wildcard matching will not use "
                    "trigram indexes", exc.orig)
        return False
    return True
