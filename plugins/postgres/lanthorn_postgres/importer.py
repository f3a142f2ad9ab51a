"""``lanthorn postgres import-sqlite``: move an existing SQLite index to PostgreSQL.

Every table of the shared schema (``lanthorn.index.schema.metadata``, so tables added
by later migrations come along) is copied in one PostgreSQL transaction, in batches
streamed from SQLite; the ID sequences then continue after the copied rows. The
target must be empty; the source is first brought to the newest schema. With
``"EnableStorage": true`` the files of the filesystem storage area are copied too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sqlalchemy import Connection, func, insert, select, text

from lanthorn.builtin.sqlite import INDEX_FILE, sqlite_engine
from lanthorn.config import load_config
from lanthorn.errors import LanthornError
from lanthorn.index import SqlIndex, schema, upgrade
from lanthorn.storage import FilesystemStorage

from . import open_index, open_storage
from .settings import SECTION, Settings

BATCH = 5000


def configure(parser: argparse.ArgumentParser) -> None:
    tools = parser.add_subparsers(title="tools", metavar="TOOL", required=True)
    importer = tools.add_parser(
        "import-sqlite", help="copy a SQLite index into an empty PostgreSQL database",
        description=__doc__.split("\n\n")[0])
    importer.add_argument("--sqlite", metavar="FILE",
                          help=f"the SQLite index (default: {INDEX_FILE} in IndexDirectory, "
                               "else StorageDirectory)")
    # Also after the tool's name (the core gives ``lanthorn postgres --config``).
    importer.add_argument("--config", metavar="FILE|FOLDER", default=argparse.SUPPRESS,
                          help="configuration file or folder (default: $LANTHORN_CONFIG)")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    settings = Settings.from_section(config.section(SECTION))
    folder = Path(config["IndexDirectory"] or config["StorageDirectory"])
    source_path = Path(args.sqlite) if args.sqlite else folder / INDEX_FILE
    if not source_path.is_file():
        raise LanthornError(f"no SQLite index at {source_path}")
    counts = import_sqlite(source_path, settings,
                           FilesystemStorage(config["StorageDirectory"], sync=False))
    for table, count in counts.items():
        print(f"{table:<20} {count}")
    print(f"imported {source_path} into {settings.url.render_as_string()}", file=sys.stderr)
    return 0


def import_sqlite(source_path: Path, settings: Settings,
                  files: FilesystemStorage) -> dict[str, int]:
    """Copy the index at ``source_path`` into the (empty) database of ``settings``;
    return the rows copied per table."""
    source = sqlite_engine(source_path, durable=False)
    target = open_index(settings)
    try:
        upgrade(source)
        counts = _copy(SqlIndex(source), target)
        if settings.enable_storage:
            storage = open_storage(settings)
            for uuid, _mtime in files.scan():
                if not storage.exists(uuid):
                    with files.open(uuid) as handle:
                        storage.write(uuid, handle.read())
            counts["storage_files"] = sum(1 for _ in storage.scan())
        return counts
    finally:
        source.dispose()
        target.close()


def _copy(source: SqlIndex, target: SqlIndex) -> dict[str, int]:
    counts: dict[str, int] = {}
    with source.read() as reader, target.write() as writer:
        if writer.scalar(select(func.count()).select_from(schema.resources)) or \
                writer.scalar(select(func.count()).select_from(schema.changes)):
            raise LanthornError("the PostgreSQL index is not empty; import into a new database")
        for table in schema.metadata.sorted_tables:
            counts[table.name] = 0
            rows = reader.execute(select(table)).mappings()
            while batch := rows.fetchmany(BATCH):
                writer.execute(insert(table), [dict(row) for row in batch])
                counts[table.name] += len(batch)
        _restart_sequences(writer)
    return counts


def _restart_sequences(conn: Connection) -> None:
    """Make the next generated ID follow the copied ones (explicit IDs skip sequences)."""
    for table in schema.metadata.sorted_tables:
        column = table.autoincrement_column
        if column is not None:
            conn.execute(text(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "
                f"COALESCE((SELECT MAX({column.name}) FROM {table.name}), 0) + 1, false)"))
