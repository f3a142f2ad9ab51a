"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-26 12:23:38.892012
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "changes",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("change_type", sa.SmallInteger(), nullable=False),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("public_id", sa.String(length=44), nullable=False),
        sa.Column("date", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "cursors",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "exported_resources",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("public_id", sa.String(length=44), nullable=False),
        sa.Column("remote_modality", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.Text(), nullable=False),
        sa.Column("study_uid", sa.Text(), nullable=False),
        sa.Column("series_uid", sa.Text(), nullable=False),
        sa.Column("sop_uid", sa.Text(), nullable=False),
        sa.Column("date", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "global_properties",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "resources",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("public_id", sa.String(length=44), nullable=False),
        sa.Column("parent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("last_update", sa.Float(), nullable=False),
        sa.Column("is_stable", sa.Boolean(), nullable=False),
        sa.Column("protected", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["parent_id"], ["resources.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("public_id"),
    )
    with op.batch_alter_table("resources", schema=None) as batch_op:
        batch_op.create_index("ix_resources_level", ["level", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_resources_parent_id"), ["parent_id"], unique=False)
        batch_op.create_index("ix_resources_unstable", ["is_stable", "last_update"], unique=False)

    op.create_table(
        "attachments",
        sa.Column(
            "resource_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("content_type", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("compressed_size", sa.BigInteger(), nullable=False),
        sa.Column("uncompressed_size", sa.BigInteger(), nullable=False),
        sa.Column("compression", sa.SmallInteger(), nullable=False),
        sa.Column("compressed_md5", sa.String(length=32), nullable=False),
        sa.Column("uncompressed_md5", sa.String(length=32), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["resource_id"], ["resources.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("resource_id", "content_type"),
        sa.UniqueConstraint("uuid"),
    )
    op.create_table(
        "instance_headers",
        sa.Column(
            "resource_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("header", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["resource_id"], ["resources.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("resource_id"),
    )
    op.create_table(
        "labels",
        sa.Column(
            "resource_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["resource_id"], ["resources.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("resource_id", "label"),
    )
    with op.batch_alter_table("labels", schema=None) as batch_op:
        batch_op.create_index("ix_labels_label", ["label"], unique=False)

    op.create_table(
        "main_tags",
        sa.Column(
            "resource_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("tag", sa.Integer(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("norm", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["resource_id"], ["resources.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("resource_id", "tag"),
    )
    with op.batch_alter_table("main_tags", schema=None) as batch_op:
        batch_op.create_index("ix_main_tags_norm", ["tag", "norm"], unique=False)
        batch_op.create_index("ix_main_tags_value", ["tag", "value"], unique=False)

    op.create_table(
        "metadata",
        sa.Column(
            "resource_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["resource_id"], ["resources.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("resource_id", "name"),
    )


def downgrade() -> None:
    op.drop_table("metadata")
    with op.batch_alter_table("main_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_main_tags_value")
        batch_op.drop_index("ix_main_tags_norm")

    op.drop_table("main_tags")
    with op.batch_alter_table("labels", schema=None) as batch_op:
        batch_op.drop_index("ix_labels_label")

    op.drop_table("labels")
    op.drop_table("instance_headers")
    op.drop_table("attachments")
    with op.batch_alter_table("resources", schema=None) as batch_op:
        batch_op.drop_index("ix_resources_unstable")
        batch_op.drop_index(batch_op.f("ix_resources_parent_id"))
        batch_op.drop_index("ix_resources_level")

    op.drop_table("resources")
    op.drop_table("leases")
    op.drop_table("global_properties")
    op.drop_table("exported_resources")
    op.drop_table("cursors")
    op.drop_table("changes")
