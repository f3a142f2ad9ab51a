"""instance_json: the DICOM JSON of instances, kept once rendered (DICOMweb metadata)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 15:35:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instance_json",
        sa.Column(
            "resource_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("json", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["resource_id"], ["resources.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("resource_id"),
    )


def downgrade() -> None:
    op.drop_table("instance_json")
