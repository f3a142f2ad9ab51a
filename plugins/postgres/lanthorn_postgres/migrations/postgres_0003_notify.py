"""postgres_index: the change log notifies the cluster from a trigger

Revision ID: postgres_0003
Revises: postgres_0002
Create Date: 2026-11-27 04:40:00
"""

from alembic import op

revision = "postgres_0003"
down_revision = "postgres_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Once per statement; NOTIFY folds a transaction's identical notifications into one,
    # delivered at commit. Whoever writes to the change log, every node is woken.
    op.execute("""
        CREATE OR REPLACE FUNCTION lanthorn_notify_changes() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('lanthorn_changes', '');
            RETURN NULL;
        END $$""")
    op.execute("""
        CREATE TRIGGER lanthorn_changes_notify AFTER INSERT ON changes
        FOR EACH STATEMENT EXECUTE FUNCTION lanthorn_notify_changes()""")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS lanthorn_changes_notify ON changes")
    op.execute("DROP FUNCTION IF EXISTS lanthorn_notify_changes()")
