"""The inbox: a consumer records each event id in the same transaction as the event's effect, so a
redelivered event finds its id there and has no second effect.

A service's Alembic migration creates the table: `op.execute(inbox.INBOX_DDL)`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Final, TypeVar

import asyncpg

from oms.kernel.events import Envelope
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
    return event_id in await _record(conn, [event_id])


E = TypeVar("E", bound=Envelope)


async def first_deliveries(conn: asyncpg.Connection, events: Sequence[E]) -> list[E]:
    """`first_delivery` for a batch in one statement: the events to apply, in their order — those seen for
    the first time, each once even if it was delivered twice in the batch."""
    fresh = await _record(conn, [event.id for event in events])
    todo: list[E] = []
    for event in events:
        if event.id in fresh:
            fresh.discard(event.id)
            todo.append(event)
    return todo


async def _record(conn: asyncpg.Connection, event_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    if not conn.is_in_transaction():
        raise OutsideTransaction("first_delivery must run inside the transaction that applies the effect")
    rows = await conn.fetch(
        "INSERT INTO inbox (event_id) SELECT unnest($1::uuid[]) ON CONFLICT (event_id) DO NOTHING "
        "RETURNING event_id",
        event_ids,
    )
    return {row[0] for row in rows}


async def unrecord(conn: asyncpg.Connection, event_ids: Iterable[uuid.UUID]) -> None:
    """Take back `first_deliveries` of events whose effect this transaction does not apply after all
    (they failed and will be delivered again)."""
    ids = list(event_ids)
    if ids:
        await conn.execute("DELETE FROM inbox WHERE event_id = ANY($1::uuid[])", ids)


async def forget_processed(conn: asyncpg.Connection, older_than: timedelta) -> int:
    """Delete inbox rows older than `older_than` (longer than the broker keeps events); returns how many."""
    status = await conn.execute("DELETE FROM inbox WHERE processed_at < now() - $1::interval", older_than)
    return int(status.split()[-1])
