"""postgres_storage: the storage area's tables (files and their chunks)

Revision ID: postgres_0001
Revises:
Create Date: 2026-11-26 19:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "postgres_0001"
down_revision = None
branch_labels = ("postgres_storage",)
depends_on = None


def upgrade() -> None:
    # Databases of version 0.1.0 have the tables already (created at start-up then).
    if sa.inspect(op.get_bind()).has_table("storage_files"):
        return
    op.create_table(
        "storage_files",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("written", sa.Float(), nullable=False),
    )
    op.create_table(
        "storage_chunks",
        sa.Column("uuid", sa.String(36), sa.ForeignKey("storage_files.uuid", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("number", sa.Integer(), primary_key=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("storage_chunks")
    op.drop_table("storage_files")
