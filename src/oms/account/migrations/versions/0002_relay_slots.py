"""What the relay remembers of its replication slot: whether the outbox rows left when it was created have
been published (see oms.kernel.outbox.RELAY_SLOTS_DDL); and vacuum keeps the outbox's empty pages (no
exclusive lock that stops its writers, see KEEP_PAGES_DDL).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from alembic import op

from oms.kernel import outbox

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(outbox.RELAY_SLOTS_DDL)
    op.execute(outbox.KEEP_PAGES_DDL)


def downgrade() -> None:
    op.execute("DROP TABLE relay_slots; ALTER TABLE outbox RESET (vacuum_truncate);")
