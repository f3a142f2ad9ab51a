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

from pathlib import Path

from psycopg import IsolationLevel
from sqlalchemy import Connection, Engine, create_engine, event

from .settings import Settings

#: The advisory lock every writer takes ("LNTH" in ASCII), shared by all Lanthorn
#: processes on the database; other applications on the same database must not use it.
WRITER_LOCK = 0x4C4E5448

#: The plugin's own tables and indexes, as Alembic branches applied with the core's
#: history (``lanthorn.index.upgrade``): ``postgres_storage`` and ``postgres_index``.
MIGRATIONS = Path(__file__).with_name("migrations")


def postgres_engine(settings: Settings, index: bool = False) -> Engine:
    """A connection pool whose write transactions (``lanthorn_write``) take the writers'
    lock and, for the ``index``, whose transactions follow the isolation rules above.

    No ping before each use (a round trip per transaction): when the server drops
    connections (a restart), the statement that finds out fails and SQLAlchemy replaces
    every pooled connection."""
    engine = create_engine(settings.url, pool_size=settings.maximum_connections // 2,
                           max_overflow=settings.maximum_connections // 2, pool_recycle=3600)

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        write = bool(connection.get_execution_options().get("lanthorn_write"))
        if index:
            # psycopg opens the transaction with the next statement, as one
            # "BEGIN ISOLATION LEVEL ..." command: no extra round trip for the settings.
            dbapi = connection.connection.dbapi_connection
            dbapi.isolation_level = IsolationLevel.READ_COMMITTED if write \
                else IsolationLevel.REPEATABLE_READ
            dbapi.read_only = not write
        if write:
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITER_LOCK})")

    return engine


def index_engine(settings: Settings) -> Engine:
    return postgres_engine(settings, index=True)
