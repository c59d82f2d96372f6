"""Instruments: the security master.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE instruments (
            symbol text PRIMARY KEY CHECK (symbol ~ '^[A-Z][A-Z0-9.]{0,11}$' AND symbol <> 'TRY'),
            name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
            tick_size numeric NOT NULL CHECK (tick_size > 0),
            lot_size numeric NOT NULL CHECK (lot_size > 0),
            price_band_percent numeric NOT NULL CHECK (price_band_percent > 0 AND price_band_percent <= 100),
            status text NOT NULL CHECK (status IN ('OPEN', 'HALTED')),
            reference_price numeric NOT NULL CHECK (reference_price > 0 AND reference_price % tick_size = 0),
            daily_volatility numeric NOT NULL CHECK (daily_volatility >= 0 AND daily_volatility < 1),
            -- Grows by one with every change; the broker deduplicates an instrument's publication by it.
            version integer NOT NULL CHECK (version >= 1),
            updated_at timestamptz NOT NULL DEFAULT now(),
            updated_by text  -- the admin's user name; NULL: listed from the shipped data set
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE instruments;")
