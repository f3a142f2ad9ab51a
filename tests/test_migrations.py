"""The Alembic history builds exactly the schema that ``lanthorn.index.schema`` declares,
and walks down and up again, so every backend upgrades to the tables the code uses."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from lanthorn.index import migrate, schema


def differences(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), schema.metadata)
    finally:
        engine.dispose()


def test_migrations_build_the_declared_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'index.db'}"
    migrate.upgrade(create_engine(url))
    assert differences(url) == []


def test_migrations_go_down_to_nothing_and_up_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'index.db'}"
    config = migrate.alembic_config(create_engine(url))
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    added = {diff[1].name for diff in differences(url) if diff[0] == "add_table"}
    assert added == set(schema.metadata.tables)
    command.upgrade(config, "head")
    assert differences(url) == []


def test_a_plugin_branch_is_applied_with_the_core_history_once(tmp_path: Path) -> None:
    """A plugin's folder of revisions (docs/writing-plugins.md): from an empty database,
    its branch alone pulls in the core revision it depends on; a full upgrade adds the
    rest; upgrading again (each start-up does) changes nothing."""
    branch = Path(__file__).with_name("migration_branch")
    engine = create_engine(f"sqlite:///{tmp_path / 'index.db'}")

    def state() -> tuple[set[str], set[str]]:
        with engine.connect() as conn:
            return (set(conn.scalars(text("SELECT version_num FROM alembic_version"))),
                    set(inspect(conn).get_table_names()))

    migrate.upgrade(engine, [branch], "example@head")
    versions, tables = state()
    assert versions == {"example_0001"} and {"example_notes", "resources"} <= tables
    assert "instance_json" not in tables  # core revisions after 0001 wait for the rest
    core_head = ScriptDirectory.from_config(migrate.alembic_config(engine)).get_current_head()
    for _ in range(2):
        migrate.upgrade(engine, [branch])
        versions, tables = state()
        assert versions == {core_head, "example_0001"}
        assert set(schema.metadata.tables) | {"example_notes"} <= tables
    engine.dispose()
