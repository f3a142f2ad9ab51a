"""Pytest fixtures (published through ``pytest11``): a throwaway PostgreSQL database per
test, and the ``postgresql`` backend of the core's ``all_index_backends`` tests.

The server is ``$LANTHORN_TEST_POSTGRES_DSN`` (default: the local server, user
``postgres``); test databases are named after that DSN's database and dropped after the
test. Each is copied from a template migrated once per session, so a test pays for a
``CREATE DATABASE``, not for the migrations. Without a reachable server the tests are
skipped, or fail under CI (``LANTHORN_REQUIRE_TOOLS=1``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

import lanthorn_postgres
from lanthorn.testing import IndexBackendUnderTest, missing

from .settings import DRIVER, Settings

DSN_VARIABLE = "LANTHORN_TEST_POSTGRES_DSN"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> URL:
    return make_url(os.environ.get(DSN_VARIABLE) or DEFAULT_DSN).set(drivername=DRIVER)


def _admin_engine() -> Engine:
    return create_engine(admin_url(), isolation_level="AUTOCOMMIT", poolclass=NullPool)


class Databases:
    """Creates and drops databases on the test server (CREATE DATABASE cannot run in a
    transaction, hence AUTOCOMMIT)."""

    def __init__(self) -> None:
        self.engine = _admin_engine()
        self.prefix = f"{admin_url().database or 'lanthorn'}_t{uuid.uuid4().hex[:8]}"
        self._count = 0

    def create(self, template: str | None = None) -> URL:
        self._count += 1
        name = f"{self.prefix}_{self._count}"
        with self.engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'
                              + (f' TEMPLATE "{template}"' if template else "")))
        return admin_url().set(database=name)

    def drop(self, url: URL) -> None:
        with self.engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[Databases]:
    """The database factory; PostgreSQL missing is a skip (a failure under CI)."""
    try:
        databases = Databases()
        with databases.engine.connect():
            pass
    except OperationalError as exc:
        missing(f"PostgreSQL is not reachable at {admin_url().render_as_string()} "
                f"(set {DSN_VARIABLE}): {exc.orig}")
    yield databases
    databases.engine.dispose()


@pytest.fixture(scope="session")
def postgres_template(postgres_databases: Databases) -> Iterator[str]:
    """An empty database at the newest schema, copied by each test's database."""
    url = postgres_databases.create()
    lanthorn_postgres.open_index(Settings(url)).close()
    yield url.database or ""
    postgres_databases.drop(url)


@pytest.fixture
def postgres_url(postgres_databases: Databases, postgres_template: str) -> Iterator[URL]:
    """A new database at the newest schema, dropped after the test."""
    url = postgres_databases.create(template=postgres_template)
    yield url
    postgres_databases.drop(url)


@pytest.fixture
def postgres_section(postgres_url: URL) -> dict[str, Any]:
    """A ``"PostgreSQL"`` config section enabling the index on ``postgres_url``."""
    return {"EnableIndex": True,
            "ConnectionUri": postgres_url.render_as_string(hide_password=False)}


@pytest.fixture
def lanthorn_index_backend_postgresql(postgres_section: dict[str, Any]) -> IndexBackendUnderTest:
    return IndexBackendUnderTest("postgresql", {"PostgreSQL": postgres_section},
                                 (lanthorn_postgres,))
