"""Orders, idempotency keys, outbox and inbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

Frozen: it holds its DDL as it ran in its first release; later changes are later revisions.
"""

from alembic import op

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

        CREATE TABLE idempotency_keys (
            principal text NOT NULL,
            key text NOT NULL,
            request_hash text NOT NULL,
            status_code integer,
            response jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (principal, key)
        );
        CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

        CREATE TABLE outbox (
            seq bigserial NOT NULL,
            id uuid PRIMARY KEY,
            subject text NOT NULL,
            payload jsonb NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        -- Every row is deleted soon after it is inserted (docs/decisions/004): vacuum it often.
        ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000);
        -- Inserts only: the relay's own deletes of relayed rows must not come back through the stream.
        CREATE PUBLICATION oms_outbox FOR TABLE outbox WITH (publish = 'insert');

        CREATE TABLE inbox (
            event_id uuid PRIMARY KEY,
            processed_at timestamptz NOT NULL DEFAULT now()
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP PUBLICATION oms_outbox; DROP TABLE inbox, outbox, idempotency_keys, orders;")
