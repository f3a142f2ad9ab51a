"""storage commitments

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 15:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "storage_commitments",
        sa.Column("transaction_uid", sa.String(length=64), nullable=False),
        sa.Column("remote_aet", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("success", sa.Text(), nullable=False),
        sa.Column("failures", sa.Text(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("transaction_uid"),
    )
    op.create_index("ix_storage_commitments_created", "storage_commitments", ["created"],
                    unique=False)


def downgrade() -> None:
    op.drop_index("ix_storage_commitments_created", table_name="storage_commitments")
    op.drop_table("storage_commitments")
