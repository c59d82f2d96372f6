"""Orders at market prices (SPEC §3b): LIMIT or MARKET (no price), GTC, DAY or IOC, what a MARKET BUY
reserved per unit, and the price each order executed at; and the processes with an order stream open (while
there is one, order changes are notified: order/stream.py).

Existing orders stay valid: they are LIMIT GTC orders, and those MATCHED executed at their limit price.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06

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
        ALTER TABLE orders
            ALTER COLUMN price DROP NOT NULL,
            ADD COLUMN order_type text NOT NULL DEFAULT 'LIMIT' CHECK (order_type IN ('LIMIT', 'MARKET')),
            ADD COLUMN time_in_force text NOT NULL DEFAULT 'GTC'
                CHECK (time_in_force IN ('GTC', 'DAY', 'IOC')),
            ADD COLUMN reserve_price numeric CHECK (reserve_price > 0),
            ADD COLUMN executed_price numeric CHECK (executed_price > 0);
        UPDATE orders SET executed_price = price WHERE status = 'MATCHED';
        ALTER TABLE orders
            ADD CONSTRAINT orders_limit_priced CHECK ((order_type = 'LIMIT') = (price IS NOT NULL)),
            ADD CONSTRAINT orders_executed_once_matched
                CHECK ((status = 'MATCHED') = (executed_price IS NOT NULL));
        CREATE TABLE order_streams (
            process uuid PRIMARY KEY,
            open_until timestamptz NOT NULL
        );
        """
    )


def downgrade() -> None:
    # Fails while MARKET orders exist (they have no price): the older schema cannot hold them.
    op.execute(
        """
        DROP TABLE order_streams;
        ALTER TABLE orders
            DROP CONSTRAINT orders_executed_once_matched,
            DROP CONSTRAINT orders_limit_priced,
            DROP COLUMN executed_price,
            DROP COLUMN reserve_price,
            DROP COLUMN time_in_force,
            DROP COLUMN order_type,
            ALTER COLUMN price SET NOT NULL;
        """
    )
