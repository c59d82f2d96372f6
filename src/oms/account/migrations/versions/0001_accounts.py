"""Balances, reservations, tombstones, the ledger, withdrawals, idempotency keys, outbox and inbox.

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
        CREATE TABLE assets (
            id uuid PRIMARY KEY,
            customer_id uuid NOT NULL,
            asset_name text NOT NULL,
            total_size numeric NOT NULL,
            usable_size numeric NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (customer_id, asset_name),
            CHECK (0 <= usable_size AND usable_size <= total_size)
        );

        CREATE TABLE reservations (
            id uuid PRIMARY KEY,
            order_id uuid UNIQUE,  -- NULL: the unusable part of a deposit
            customer_id uuid NOT NULL,
            asset_name text NOT NULL,
            amount numeric NOT NULL CHECK (amount > 0),
            status text NOT NULL CHECK (status IN ('HELD', 'RELEASED', 'SETTLED')),
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX reservations_held ON reservations (customer_id, asset_name) WHERE status = 'HELD';

        -- Orders never to reserve for: canceled before order.created arrived, or rejected.
        CREATE TABLE tombstones (
            order_id uuid PRIMARY KEY,
            customer_id uuid NOT NULL,
            reason text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE ledger (
            seq bigserial PRIMARY KEY,
            customer_id uuid NOT NULL,
            asset_name text NOT NULL,
            kind text NOT NULL CHECK (kind IN
                ('DEPOSIT', 'WITHDRAWAL', 'RESERVE', 'RELEASE', 'SETTLE_DEBIT', 'SETTLE_CREDIT')),
            delta_total numeric NOT NULL,
            delta_usable numeric NOT NULL,
            order_id uuid,
            reference text,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX ledger_by_account ON ledger (customer_id, asset_name, seq DESC);
        CREATE INDEX ledger_by_customer ON ledger (customer_id, seq DESC);

        -- The journal is append-only: a correction is a new entry, never an edit.
        CREATE FUNCTION ledger_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the ledger is append-only';
        END $$;
        CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger
            FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();

        CREATE TABLE withdrawals (
            id uuid PRIMARY KEY,
            customer_id uuid NOT NULL,
            amount numeric NOT NULL CHECK (amount > 0),
            iban text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );

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
    op.execute(
        "DROP PUBLICATION oms_outbox; DROP TABLE inbox, outbox, idempotency_keys, withdrawals, ledger, "
        "tombstones, reservations, assets; DROP FUNCTION ledger_is_append_only();"
    )
