"""resources: an index on (parent_id, level) instead of (parent_id); the stable scan's
index only on what can become stable

A find that walks from a matching patient to its studies asks for the children of each
at one level; with two single-column indexes PostgreSQL intersected the parent's few
children with every resource of the level (a bitmap AND, thousands of rows per probe).
The index of unstable resources held every instance (never stable), so the scan for
quiet resources, twice a second, read the whole table on PostgreSQL.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 22:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


UNSTABLE = sa.and_(sa.column("is_stable") == sa.false(),
                   sa.column("level") < sa.literal_column("3"))


def upgrade() -> None:
    op.create_index("ix_resources_parent_level", "resources", ["parent_id", "level"])
    op.drop_index("ix_resources_parent_id", table_name="resources")
    op.drop_index("ix_resources_unstable", table_name="resources")
    op.create_index("ix_resources_unstable", "resources", ["last_update"],
                    sqlite_where=UNSTABLE, postgresql_where=UNSTABLE)


def downgrade() -> None:
    op.drop_index("ix_resources_unstable", table_name="resources")
    op.create_index("ix_resources_unstable", "resources", ["is_stable", "last_update"])
    op.create_index("ix_resources_parent_id", "resources", ["parent_id"])
    op.drop_index("ix_resources_parent_level", table_name="resources")
