"""Schema migrations: one Alembic history for every backend, run at start-up.

A plugin with tables of its own ships them as an Alembic *branch*: a folder of revision
files whose first revision has ``down_revision = None`` and ``branch_labels`` naming the
branch (``depends_on`` a core revision when its tables refer to the core's). The plugin
passes that folder to ``upgrade``, which applies the core history and the branches in
the same version table (docs/writing-plugins.md).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine, branches: Sequence[Path] = ()) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", os.pathsep.join(
        str(folder) for folder in (MIGRATIONS / "versions", *branches)))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, branches: Sequence[Path] = (), target: str = "heads") -> None:
    """Bring the database to the newest schema (safe to call from several processes):
    the core history and the plugin ``branches`` (folders of revisions), or only up to
    ``target`` (e.g. ``"label@head"``: one branch and the revisions it depends on)."""
    command.upgrade(alembic_config(engine, branches), target)
