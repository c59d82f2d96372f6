"""Orders, idempotency keys, outbox and inbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from alembic import op

from oms.kernel import idempotency, inbox, outbox

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE orders (
            id uuid PRIMARY KEY,
            customer_id uuid NOT NULL,
            asset_name text NOT NULL,
            side text NOT NULL CHECK (side IN ('BUY', 'SELL')),
            size numeric NOT NULL CHECK (size > 0),
            price numeric NOT NULL CHECK (price > 0),
            status text NOT NULL CHECK (status IN ('PENDING', 'MATCHED', 'CANCELED')),
            reason text,
            reserved boolean NOT NULL DEFAULT false,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            -- Only the order service changes a status, and a terminal one never changes again.
            CHECK (status <> 'MATCHED' OR reserved)
        );
        -- A customer's page of orders, newest first, never scanning other customers' orders.
        CREATE INDEX orders_by_customer ON orders (customer_id, created_at DESC, id DESC);
        -- An admin's view of every order, newest first.
        CREATE INDEX orders_by_time ON orders (created_at DESC, id DESC);
        CREATE INDEX orders_pending ON orders (created_at) WHERE status = 'PENDING';
        """
    )
    op.execute(idempotency.IDEMPOTENCY_DDL)
    op.execute(outbox.OUTBOX_DDL)
    op.execute(outbox.PUBLICATION_DDL)
    op.execute(inbox.INBOX_DDL)


def downgrade() -> None:
    op.execute(outbox.DROP_DDL)
    op.execute(inbox.DROP_DDL)
    op.execute("DROP TABLE idempotency_keys; DROP TABLE orders;")
