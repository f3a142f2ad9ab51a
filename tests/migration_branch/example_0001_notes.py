"""example: a plugin's table, referring to the core's resources (tests/test_migrations.py)

Revision ID: example_0001
Revises:
Create Date: 2026-11-26 19:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "example_0001"
down_revision = None
branch_labels = ("example",)
depends_on = "0001"  # resources


def upgrade() -> None:
    op.create_table(
        "example_notes",
        sa.Column("resource_id", sa.Integer(),
                  sa.ForeignKey("resources.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("note", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("example_notes")
