"""The transactional outbox: events are written in the same transaction as the state change they describe
(by the unit of work, `oms.kernel.unit_of_work`); the relay (`oms.kernel.relay`) reads them from the
write-ahead log and publishes them.

A service's Alembic migration creates the table and the publication:

    from oms.kernel import outbox
    op.execute(outbox.OUTBOX_DDL)
    op.execute(outbox.PUBLICATION_DDL)
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import asyncpg

from oms.kernel.events import Envelope, Event
from oms.kernel.sql import Write

# Vacuum would give the emptied pages at the table's end back to the file system under an exclusive lock
# that stops every writer of the outbox while it is held (briefly: vacuum lets go when writers wait); the
# pages are refilled within seconds anyway. (The periodic stalls seen under load were WAL segment creation,
# see runtime/postgres.py, not this.)
KEEP_PAGES_DDL: Final = "ALTER TABLE outbox SET (vacuum_truncate = false);"

OUTBOX_DDL: Final = f"""
CREATE TABLE IF NOT EXISTS outbox (
    seq bigserial NOT NULL,
    id uuid PRIMARY KEY,
    subject text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Every row is deleted soon after it is inserted (docs/decisions/004): vacuum it often, not at 20% dead.
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000);
{KEEP_PAGES_DDL}
"""

# Inserts only: the relay's own deletes of relayed rows must not come back through the stream.
PUBLICATION_DDL: Final = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'oms_outbox') THEN
        CREATE PUBLICATION oms_outbox FOR TABLE outbox WITH (publish = 'insert');
    END IF;
END
$$;
"""

# Whether the rows left in the outbox when a replication slot was (re)created have all been published: set
# false before the slot is created and true once they are, so a relay that dies in between does it again.
RELAY_SLOTS_DDL: Final = """
CREATE TABLE IF NOT EXISTS relay_slots (
    slot text PRIMARY KEY,
    leftovers_published boolean NOT NULL
);
"""

# Rows in the given order: the relay publishes a transaction's events in the order they were inserted.
_INSERT: Final = (
    "INSERT INTO outbox (id, subject, payload) SELECT id, subject, payload::jsonb "
    "FROM unnest($1::uuid[], $2::text[], $3::text[]) WITH ORDINALITY AS e(id, subject, payload, n) ORDER BY n"
)


def outbox_rows(envelopes: Sequence[Envelope[Event]]) -> Write:
    """The statement that queues `envelopes` for publishing, in this order (a unit of work runs it with the
    state changes they describe)."""
    # Through text, so the result does not depend on a jsonb codec the connection may have.
    return Write(
        _INSERT,
        (
            [envelope.id for envelope in envelopes],
            [envelope.subject for envelope in envelopes],
            [envelope.to_json().decode() for envelope in envelopes],
        ),
    )


@dataclass(frozen=True)
class RelayPosition:
    """How far a relay is behind, read in its database: its slot's lag and what waits in the outbox."""

    slot_exists: bool
    relay_connected: bool  # a relay streams the slot right now
    lag_bytes: int | None  # WAL written but not yet confirmed
    backlog: int  # outbox rows not yet relayed (or relayed and not deleted yet)
    oldest_seconds: float | None


async def relay_position(conn: asyncpg.Connection | asyncpg.Pool, slot: str) -> RelayPosition:
    """Where the relay of `slot` stands."""
    row = await conn.fetchrow(
        "SELECT s.active, pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint AS lag,"
        " o.n, o.age FROM (SELECT count(*) AS n, extract(epoch FROM now() - min(created_at))::float8 AS age"
        " FROM outbox) AS o LEFT JOIN pg_replication_slots AS s ON s.slot_name = $1",
        slot,
    )
    assert row is not None
    exists = row["active"] is not None
    return RelayPosition(exists, bool(row["active"]), row["lag"] if exists else None, row["n"], row["age"])


@dataclass(frozen=True)
class OutboxRow:
    id: uuid.UUID
    subject: str
    created_at: datetime


async def unrelayed(conn: asyncpg.Connection, written_within: timedelta | None = None) -> list[OutboxRow]:
    """The rows in the outbox, oldest first (only those written within `written_within`, if given)."""
    rows = await conn.fetch(
        "SELECT id, subject, created_at FROM outbox WHERE $1::interval IS NULL OR created_at > now() - $1 "
        "ORDER BY seq",
        written_within,
    )
    return [OutboxRow(r["id"], r["subject"], r["created_at"]) for r in rows]
