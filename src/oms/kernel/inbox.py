"""The inbox: a consumer records each event id in the same transaction as the event's effect, so a
redelivered event finds its id there and has no second effect.

A service's Alembic migration creates the table. Handlers reach it through their unit of work
(`tx.inbox`, `oms.kernel.unit_of_work`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Final, TypeVar

import asyncpg

from oms.kernel.events import Envelope, Event
from oms.kernel.sql import Write

INBOX_DDL: Final = """
CREATE TABLE IF NOT EXISTS inbox (
    event_id uuid PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
"""

E = TypeVar("E", bound=Envelope[Event])


def fresh(envelopes: Sequence[E], recorded: Iterable[uuid.UUID]) -> list[E]:
    """Of `envelopes`, in their order, those whose id was just `recorded` (seen for the first time), each
    once even if it was delivered twice in the batch."""
    new = set(recorded)
    todo: list[E] = []
    for envelope in envelopes:
        if envelope.id in new:
            new.discard(envelope.id)
            todo.append(envelope)
    return todo


class Inbox:
    """The inbox inside a unit of work: `first_deliveries` records at once (a concurrent delivery of the same
    event waits on its row until this transaction ends); `forget` is staged with the unit's other writes."""

    def __init__(self, conn: asyncpg.Connection, stage: Callable[[Write], None]) -> None:
        self._conn = conn
        self._stage = stage

    async def first_deliveries(self, envelopes: Sequence[E]) -> list[E]:
        """The events to apply, in their order: those seen for the first time (see `fresh`)."""
        rows = await self._conn.fetch(
            "INSERT INTO inbox (event_id) SELECT unnest($1::uuid[]) ON CONFLICT (event_id) DO NOTHING "
            "RETURNING event_id",
            [envelope.id for envelope in envelopes],
        )
        return fresh(envelopes, (row[0] for row in rows))

    def forget(self, event_ids: Iterable[uuid.UUID]) -> None:
        """Take back `first_deliveries` of events this unit does not apply after all (they failed and will be
        delivered again)."""
        ids = list(event_ids)
        if ids:
            self._stage(Write("DELETE FROM inbox WHERE event_id = ANY($1::uuid[])", (ids,)))


async def forget_processed(conn: asyncpg.Connection, older_than: timedelta) -> int:
    """Delete inbox rows older than `older_than` (longer than the broker keeps events); returns how many."""
    status = await conn.execute("DELETE FROM inbox WHERE processed_at < now() - $1::interval", older_than)
    return int(status.split()[-1])


async def recorded(conn: asyncpg.Connection, event_id: uuid.UUID) -> bool:
    """True once the event's effect was applied (for operators' checks)."""
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM inbox WHERE event_id = $1)", event_id))


async def size(conn: asyncpg.Connection) -> int:
    """How many events the inbox remembers."""
    count: int = await conn.fetchval("SELECT count(*) FROM inbox")
    return count
