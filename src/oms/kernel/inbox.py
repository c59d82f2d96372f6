"""The inbox: a consumer records each event id in the same transaction as the event's effect, so a
redelivered event finds its id there and has no second effect.

A service's Alembic migration creates the table: `op.execute(inbox.INBOX_DDL)`.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Final

import asyncpg

from oms.kernel.outbox import OutsideTransaction

INBOX_DDL: Final = """
CREATE TABLE IF NOT EXISTS inbox (
    event_id uuid PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
"""

DROP_DDL: Final = "DROP TABLE IF EXISTS inbox;"


async def first_delivery(conn: asyncpg.Connection, event_id: uuid.UUID) -> bool:
    """True the first time `event_id` is seen (the caller then applies the effect in this transaction);
    False if it was processed already. A concurrent delivery of the same event waits here until the first
    one commits or rolls back."""
    if not conn.is_in_transaction():
        raise OutsideTransaction("first_delivery must run inside the transaction that applies the effect")
    status = await conn.execute(
        "INSERT INTO inbox (event_id) VALUES ($1) ON CONFLICT (event_id) DO NOTHING", event_id
    )
    return bool(status == "INSERT 0 1")


async def forget_processed(conn: asyncpg.Connection, older_than: timedelta) -> int:
    """Delete inbox rows older than `older_than` (longer than the broker keeps events); returns how many."""
    status = await conn.execute("DELETE FROM inbox WHERE processed_at < now() - $1::interval", older_than)
    return int(status.split()[-1])
