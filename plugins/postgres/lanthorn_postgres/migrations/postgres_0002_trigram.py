"""postgres_index: pg_trgm indexes on the main tags, for wildcard matching

Revision ID: postgres_0002
Revises:
Create Date: 2026-11-26 19:10:00
"""

import logging

from alembic import op
from sqlalchemy.exc import DBAPIError

revision = "postgres_0002"
down_revision = None
branch_labels = ("postgres_index",)
depends_on = "0001"  # main_tags

log = logging.getLogger("lanthorn_postgres")

#: ``LIKE '%abc%'`` and ``'abc%'`` on any collation (the B-tree on (tag, value) only
#: serves prefixes under the C collation).
INDEXES = {
    "ix_main_tags_value_trgm": "main_tags USING gin (value gin_trgm_ops)",
    "ix_main_tags_norm_trgm": "main_tags USING gin (norm gin_trgm_ops)",
}


def upgrade() -> None:
    # Without the extension (not installed, or not allowed to this user) the index still
    # works, with slower wildcards: a savepoint keeps the migration's transaction alive.
    bind = op.get_bind()
    try:
        with bind.begin_nested():
            op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except DBAPIError as exc:
        log.warning("pg_trgm is not available (%s); wildcard matching will not use trigram "
                    "indexes (docs/postgresql.md: create them later)", exc.orig)
        return
    for name, target in INDEXES.items():
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {target}")


def downgrade() -> None:
    for name in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
