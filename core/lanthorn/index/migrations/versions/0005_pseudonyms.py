"""persistent pseudonyms of anonymization

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pseudonyms",
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("original", sa.String(length=256), nullable=False),
        sa.Column("pseudonym", sa.String(length=256), nullable=False),
        sa.Column("patient", sa.String(length=256), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "kind", "original"),
    )
    with op.batch_alter_table("pseudonyms", schema=None) as batch_op:
        batch_op.create_index("ix_pseudonyms_patient", ["scope", "patient"], unique=False)
        batch_op.create_index("ix_pseudonyms_pseudonym", ["scope", "kind", "pseudonym"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("pseudonyms", schema=None) as batch_op:
        batch_op.drop_index("ix_pseudonyms_pseudonym")
        batch_op.drop_index("ix_pseudonyms_patient")
    op.drop_table("pseudonyms")
