"""The plugin on a real PostgreSQL: configuration, backend choice, isolation, the
storage area and ``lanthorn postgres import-sqlite``."""
# ruff: noqa: E402 - the plugin is imported once the test knows it is installed

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import insert, text
from sqlalchemy.engine import URL
from starlette.testclient import TestClient

from lanthorn import Server
from lanthorn.config import Config, ConfigError
from lanthorn.errors import InexistentItem
from lanthorn.index import SqlIndex, migrate, schema
from lanthorn.storage import COMPRESSION_NONE, FilesystemStorage, read_chunks
from lanthorn.testing import make_instance, missing

if importlib.util.find_spec("lanthorn_postgres") is None:  # skipped, or failed under CI
    missing("lanthorn-postgres is not installed (pip install -e plugins/postgres)")

import lanthorn_postgres
from lanthorn_postgres.engine import index_engine, postgres_engine
from lanthorn_postgres.notify import ChangeListener
from lanthorn_postgres.settings import Settings
from lanthorn_postgres.storage import CHUNK, PostgresStorage
from lanthorn_postgres.storage import files as storage_files
from lanthorn_postgres.storage import metadata as storage_metadata
from lanthorn_postgres.testing import Databases


@pytest.fixture
def open_server(lanthorn_config: Config, postgres_section: dict[str, Any]) -> Iterator[Any]:
    """``open_server(EnableStorage=True)``: a started in-process server with this plugin,
    its section on a throwaway database with the keys given (``None``: no section)."""
    servers: list[Server] = []

    def build(section: dict[str, Any] | None = None, **options: Any) -> Server:
        if section is not None:
            options["PostgreSQL"] = {**postgres_section, **section}
        server = Server(lanthorn_config.with_overrides(**options), load_entry_points=False,
                        plugins=[lanthorn_postgres])
        server.start()
        servers.append(server)
        return server

    yield build
    for server in servers:
        server.stop()
        server.close()


# -- configuration ------------------------------------------------------------------------

def test_installed_but_not_enabled_changes_nothing(open_server: Any) -> None:
    for server in (open_server(), open_server({"EnableIndex": False})):
        assert server.index.engine.dialect.name == "sqlite"
        assert isinstance(server.storage, FilesystemStorage)


def test_enabled_index_and_storage_are_chosen_by_the_section(open_server: Any) -> None:
    server = open_server({"EnableStorage": True})
    assert server.index.engine.dialect.name == "postgresql"
    assert isinstance(server.storage, PostgresStorage)
    with server.index.read() as conn:
        names = set(conn.scalars(text("SELECT indexname FROM pg_indexes")))
    assert {"ix_main_tags_value_trgm", "ix_main_tags_norm_trgm"} <= names


def test_the_core_parametrized_tests_really_run_on_postgresql(
        lanthorn_index_backend_postgresql: Any, lanthorn_config: Config) -> None:
    server = Server(lanthorn_config.with_overrides(**lanthorn_index_backend_postgresql.options),
                    load_entry_points=False, plugins=lanthorn_index_backend_postgresql.plugins)
    try:
        assert server.index.engine.dialect.name == "postgresql"
    finally:
        server.close()


@pytest.mark.parametrize(("section", "message"), [
    ({"EnableIndex": True, "Hots": "db"}, 'unknown key "PostgreSQL.Hots"'),
    ({"EnableIndex": "yes"}, '"PostgreSQL.EnableIndex" must be a bool'),
    ({"Port": True}, '"PostgreSQL.Port" must be a int'),
    ({"ConnectionUri": "postgresql://db/x", "Host": "db"}, "either ConnectionUri or Host"),
    ({"ConnectionUri": "mysql://db/x"}, "must be a postgresql:// URL"),
    ({"ConnectionUri": "::"}, "is not a database URL"),
])
def test_a_wrong_section_is_a_clear_error(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_section(section)


def test_connection_keys_and_uri_give_the_same_url() -> None:
    keys = Settings.from_section({"Host": "db", "Port": 6432, "Database": "pacs",
                                  "Username": "u", "Password": "p@ss"})
    uri = Settings.from_section({"ConnectionUri": "postgresql://u:p%40ss@db:6432/pacs"})
    assert keys.url == uri.url == URL.create("postgresql+psycopg", "u", "p@ss", "db", 6432,
                                             "pacs")
    # Environment overrides spell keys in upper snake case (LANTHORN__POSTGRESQL__...).
    assert Settings.from_section({"enable_index": True}).enable_index


def test_migrations_build_the_declared_schema_on_postgresql(
        postgres_databases: Databases) -> None:
    """Down to nothing and up again, then no difference with ``schema.metadata``."""
    url = postgres_databases.create()
    engine = index_engine(Settings(url))
    try:
        config = migrate.alembic_config(engine)
        command.upgrade(config, "head")
        command.downgrade(config, "base")
        command.upgrade(config, "head")
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), schema.metadata) == []
    finally:
        engine.dispose()
        postgres_databases.drop(url)



def _state(url: URL) -> tuple[set[str], set[str]]:
    """The revisions recorded in the version table, and the tables and indexes."""
    engine = postgres_engine(Settings(url))
    try:
        with engine.connect() as conn:
            return (set(conn.scalars(text("SELECT version_num FROM alembic_version"))),
                    set(conn.scalars(text("SELECT tablename FROM pg_tables UNION "
                                          "SELECT indexname FROM pg_indexes"))))
    finally:
        engine.dispose()


def test_the_plugin_branches_migrate_an_empty_database_once(
        postgres_databases: Databases) -> None:
    """The storage area alone applies its own branch; the index then adds the core's
    history and the trigram branch to the same version table; opening again (another
    node starting) changes nothing."""
    url = postgres_databases.create()
    try:
        lanthorn_postgres.open_storage(Settings(url)).close()
        versions, names = _state(url)
        assert versions == {"postgres_0001"}
        assert {"storage_files", "storage_chunks"} <= names and "resources" not in names
        core_head = ScriptDirectory.from_config(migrate.alembic_config(
            postgres_engine(Settings(url)))).get_current_head()
        for _ in range(2):
            lanthorn_postgres.open_index(Settings(url)).close()
            lanthorn_postgres.open_storage(Settings(url)).close()
            versions, names = _state(url)
            assert versions == {core_head, "postgres_0001", "postgres_0003"}
            assert {"resources", "storage_chunks", "ix_main_tags_value_trgm",
                    "ix_main_tags_norm_trgm"} <= names
    finally:
        postgres_databases.drop(url)


def test_a_database_of_the_first_version_adopts_its_storage_tables(
        postgres_databases: Databases) -> None:
    """Version 0.1.0 created the storage tables without a migration: they are kept."""
    url = postgres_databases.create()
    engine = postgres_engine(Settings(url))
    try:
        storage_metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(insert(storage_files).values(uuid="kept", size=0, written=0.0))
        PostgresStorage(engine)
        with engine.connect() as conn:
            assert conn.scalars(text("SELECT uuid FROM storage_files")).all() == ["kept"]
        assert _state(url)[0] == {"postgres_0001"}
    finally:
        engine.dispose()
        postgres_databases.drop(url)


# -- isolation -------------------------------------------------------------------------------

def test_writers_queue_and_readers_see_one_snapshot(postgres_url: URL) -> None:
    """A write transaction waits for another; a read transaction keeps its snapshot."""
    index = lanthorn_postgres.open_index(Settings(postgres_url))
    try:
        index.set_cursor("x", 1)
        entered = threading.Event()
        release = threading.Event()

        def first_writer() -> None:
            with index.write() as conn:
                entered.set()
                release.wait(10)
                conn.execute(text("UPDATE cursors SET seq = 2 WHERE name = 'x'"))

        thread = threading.Thread(target=first_writer)
        thread.start()
        entered.wait(10)
        with index.read() as reader:
            before = reader.scalar(text("SELECT seq FROM cursors"))
            second = threading.Thread(target=index.set_cursor, args=("x", 3))
            second.start()
            second.join(0.5)
            assert second.is_alive(), "a second writer ran while the first held the lock"
            release.set()
            thread.join(10)
            second.join(10)
            assert reader.scalar(text("SELECT seq FROM cursors")) == before == 1
        assert index.cursor("x") == 3  # the queued writer saw the first one's commit
        with pytest.raises(Exception, match="read-only transaction"), index.read() as reader:
            reader.execute(text("DELETE FROM cursors"))
    finally:
        index.close()


def test_logging_a_change_notifies_the_listeners(postgres_url: URL) -> None:
    index = lanthorn_postgres.open_index(Settings(postgres_url))
    woken = threading.Event()
    listener = ChangeListener(postgres_url, woken.set)
    listener.start()
    try:
        assert listener.listening.wait(10)
        index.set_cursor("not a change", 1)
        assert not woken.wait(1)
        with index.write() as conn:  # as ingest writes it: SQL on the driver's cursor
            conn.exec_driver_sql("INSERT INTO changes (change_type, level, public_id, date) "
                                 "VALUES (1, 0, 'x', '20260101T000000')")
            assert not woken.wait(1), "notified before the commit"
        assert woken.wait(10)
    finally:
        listener.stop()
        index.close()


# -- storage area ------------------------------------------------------------------------------

def test_storage_area_streams_chunks_and_seeks(postgres_url: URL) -> None:
    storage = lanthorn_postgres.open_storage(Settings(postgres_url))
    data = bytes(range(256)) * (CHUNK * 5 // 2 // 256)  # two and a half chunks
    try:
        storage.write("a-uuid", data)
        storage.write("empty", b"")
        assert storage.exists("a-uuid") and not storage.exists("other")
        assert b"".join(read_chunks(storage, "a-uuid", COMPRESSION_NONE)) == data
        window = (CHUNK - 3, 2 * CHUNK + 5)
        assert b"".join(read_chunks(storage, "a-uuid", COMPRESSION_NONE, *window,
                                    chunk=1000)) == data[window[0]:window[1]]
        assert storage.open("empty").read() == b""
        assert sorted(uuid for uuid, _ in storage.scan()) == ["a-uuid", "empty"]
        storage.remove("a-uuid")
        storage.remove("a-uuid")  # a second removal is not an error
        with pytest.raises(InexistentItem):
            storage.open("a-uuid")
    finally:
        storage.close()


def test_server_on_postgresql_storage_serves_and_deletes_files(open_server: Any) -> None:
    server = open_server({"EnableStorage": True}, StorageCompression=True)
    data = make_instance(rows=256, columns=256)
    with TestClient(server.app, client=("127.0.0.1", 1)) as client:
        instance = client.post("/instances", content=data).json()["ID"]
        assert client.get(f"/instances/{instance}/file").content == data
        part = client.get(f"/instances/{instance}/file", headers={"Range": "bytes=128-131"})
        assert part.status_code == 206 and part.content == b"DICM"
        assert len(list(server.storage.scan())) == 1
        assert client.delete(f"/instances/{instance}").status_code == 200
    assert list(server.storage.scan()) == []


# -- import-sqlite ------------------------------------------------------------------------------

def _lanthorn(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lanthorn", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=120)


def test_import_sqlite_moves_index_and_files(
        lanthorn_config: Config, postgres_section: dict[str, Any], tmp_path: Path) -> None:
    sqlite_server = Server(lanthorn_config, load_entry_points=False)
    uploads = [make_instance(PatientID=f"P{n % 2}", StudyDate=f"2020010{n}") for n in range(5)]
    with TestClient(sqlite_server.app, client=("127.0.0.1", 1)) as client:
        ids = [client.post("/instances", content=d).json()["ID"] for d in uploads]
        patient = client.get(f"/instances/{ids[0]}/patient").json()["ID"]
        assert client.put(f"/patients/{patient}/labels/moved").status_code == 200
        assert client.put(f"/instances/{ids[1]}/metadata/1024", content=b"kept").status_code == 200
        before = [client.get(url).json() for url in
                  ("/patients?expand", "/changes?limit=1000", "/statistics")]
    sqlite_server.close()

    config = tmp_path / "pg.json"
    config.write_text(json.dumps({"StorageDirectory": lanthorn_config["StorageDirectory"],
                                  "PostgreSQL": {**postgres_section, "EnableStorage": True}}))
    result = _lanthorn(config, "postgres", "import-sqlite")
    assert result.returncode == 0, result.stderr
    assert "resources            17" in result.stdout  # 2 patients, 5 studies, series, inst.

    pg_server = Server(lanthorn_config.with_overrides(
        PostgreSQL={**postgres_section, "EnableStorage": True}),
        load_entry_points=False, plugins=[lanthorn_postgres])
    try:
        assert isinstance(pg_server.index, SqlIndex)
        with TestClient(pg_server.app, client=("127.0.0.1", 1)) as client:
            after = [client.get(url).json() for url in
                     ("/patients?expand", "/changes?limit=1000", "/statistics")]
            assert after == before
            assert client.get(f"/instances/{ids[2]}/file").content == uploads[2]
            assert client.get(f"/instances/{ids[1]}/metadata/1024").text == "kept"
            # Sequences continue after the copied rows.
            client.post("/instances", content=make_instance())
            last = client.get("/changes?limit=1000").json()
            assert last["Last"] > before[1]["Last"]
    finally:
        pg_server.close()

    again = _lanthorn(config, "postgres", "import-sqlite")
    assert again.returncode == 1 and "not empty" in again.stderr
    missing = _lanthorn(config, "postgres", "import-sqlite", "--sqlite", str(tmp_path / "no"))
    assert missing.returncode == 1 and "no SQLite index" in missing.stderr

