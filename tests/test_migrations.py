"""The Alembic history builds exactly the schema that ``lanthorn.index.schema`` declares,
and walks down and up again, so every backend upgrades to the tables the code uses."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

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
