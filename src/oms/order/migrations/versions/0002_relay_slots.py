"""What the relay remembers of its replication slot: whether the outbox rows left when it was created have
been published (see oms.kernel.relay.prepare_database); and vacuum keeps the outbox's empty pages (no
exclusive lock that stops its writers, see oms.kernel.outbox.KEEP_PAGES_DDL).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04

Frozen: it holds its DDL as it ran in its first release.
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS relay_slots (
            slot text PRIMARY KEY,
            leftovers_published boolean NOT NULL
        );
        ALTER TABLE outbox SET (vacuum_truncate = false);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE relay_slots; ALTER TABLE outbox RESET (vacuum_truncate);")
