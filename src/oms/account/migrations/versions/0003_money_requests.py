"""Deposits and withdrawals as requests an admin decides: the `deposits` table (every deposit, whoever made
it), who asked for and who decided each withdrawal, holds that belong to a withdrawal, and the PAYOUT entry.

Deposits credited before this revision become APPROVED deposits (from their ledger entries), and existing
withdrawals PAID, so that conservation (approved deposits − paid withdrawals ± matched orders) holds for them.
A hold that belongs to neither an order nor a withdrawal is refused from now on; one left by older code stays
for `oms audit` to report.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08

Frozen: it holds its DDL as it ran in its first release.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE deposits (
            seq bigserial NOT NULL UNIQUE,
            id uuid PRIMARY KEY,
            customer_id uuid NOT NULL,
            asset_name text NOT NULL,
            amount numeric NOT NULL CHECK (amount > 0),
            status text NOT NULL CHECK (status IN ('REQUESTED', 'APPROVED', 'REJECTED')),
            requested_by uuid,  -- NULL: credited before requests existed
            requested_at timestamptz NOT NULL,
            decided_by uuid,
            decided_at timestamptz,
            CHECK ((status = 'REQUESTED') = (decided_at IS NULL))
        );
        CREATE INDEX deposits_by_customer ON deposits (customer_id, seq DESC);
        CREATE INDEX deposits_requested ON deposits (seq DESC) WHERE status = 'REQUESTED';
        INSERT INTO deposits (id, customer_id, asset_name, amount, status, requested_at, decided_at)
            SELECT gen_random_uuid(), customer_id, asset_name, delta_total, 'APPROVED', created_at, created_at
            FROM ledger WHERE kind = 'DEPOSIT' AND delta_total > 0 ORDER BY seq;

        ALTER TABLE withdrawals
            ADD COLUMN seq bigserial NOT NULL UNIQUE,
            ADD COLUMN status text NOT NULL DEFAULT 'PAID'
                CHECK (status IN ('REQUESTED', 'PAID', 'REJECTED')),
            ADD COLUMN requested_by uuid,  -- NULL: paid before requests existed
            ADD COLUMN decided_by uuid,
            ADD COLUMN decided_at timestamptz;
        UPDATE withdrawals SET decided_at = created_at;
        ALTER TABLE withdrawals ALTER COLUMN status DROP DEFAULT,
            ADD CHECK ((status = 'REQUESTED') = (decided_at IS NULL));
        CREATE INDEX withdrawals_by_customer ON withdrawals (customer_id, seq DESC);
        CREATE INDEX withdrawals_requested ON withdrawals (seq DESC) WHERE status = 'REQUESTED';

        ALTER TABLE reservations
            ADD COLUMN withdrawal_id uuid UNIQUE REFERENCES withdrawals (id),
            ADD CONSTRAINT reservations_belong
                CHECK ((order_id IS NULL) <> (withdrawal_id IS NULL)) NOT VALID;

        ALTER TABLE ledger DROP CONSTRAINT ledger_kind_check, ADD CONSTRAINT ledger_kind_check CHECK (kind IN
            ('DEPOSIT', 'WITHDRAWAL', 'RESERVE', 'RELEASE', 'SETTLE_DEBIT', 'SETTLE_CREDIT', 'PAYOUT'));
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE ledger DROP CONSTRAINT ledger_kind_check, ADD CONSTRAINT ledger_kind_check CHECK (kind IN
            ('DEPOSIT', 'WITHDRAWAL', 'RESERVE', 'RELEASE', 'SETTLE_DEBIT', 'SETTLE_CREDIT')) NOT VALID;
        ALTER TABLE reservations DROP CONSTRAINT reservations_belong, DROP COLUMN withdrawal_id;
        DROP INDEX withdrawals_by_customer, withdrawals_requested;
        ALTER TABLE withdrawals DROP COLUMN seq, DROP COLUMN status, DROP COLUMN requested_by,
            DROP COLUMN decided_by, DROP COLUMN decided_at;
        DROP TABLE deposits;
        """
    )
