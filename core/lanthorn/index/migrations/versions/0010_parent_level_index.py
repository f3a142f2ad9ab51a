"""resources: one index on (parent_id, level) instead of (parent_id)

A find that walks from a matching patient to its studies asks for the children of each
at one level; with two single-column indexes PostgreSQL intersected the parent's few
children with every resource of the level (a bitmap AND, thousands of rows per probe).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 22:45:00
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_resources_parent_level", "resources", ["parent_id", "level"])
    op.drop_index("ix_resources_parent_id", table_name="resources")


def downgrade() -> None:
    op.create_index("ix_resources_parent_id", "resources", ["parent_id"])
    op.drop_index("ix_resources_parent_level", table_name="resources")
