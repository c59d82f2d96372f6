"""Balances, reservations, tombstones, the ledger, withdrawals, idempotency keys, outbox and inbox.

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
        """
    )
    op.execute(idempotency.IDEMPOTENCY_DDL)
    op.execute(outbox.OUTBOX_DDL)
    op.execute(outbox.PUBLICATION_DDL)
    op.execute(inbox.INBOX_DDL)


def downgrade() -> None:
    op.execute(outbox.DROP_DDL)
    op.execute(inbox.DROP_DDL)
    op.execute(
        "DROP TABLE idempotency_keys, withdrawals, ledger, tombstones, reservations, assets;"
        "DROP FUNCTION ledger_is_append_only();"
    )
