"""The outbox on PostgreSQL: rows queued in the order they were emitted, and what operators read of it — the
rows not relayed yet, and how far the relay is behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import psycopg2
import pytest
from psycopg2.extras import LogicalReplicationConnection

from oms.kernel.events import parse
from oms.kernel.outbox import outbox_rows, relay_position, unrelayed
from oms.kernel.sql import write_together
from oms.kernel.topology import PUBLICATION, slot_name
from tests.integration.conftest import ServiceDatabase, canceled_event


@pytest.fixture
async def conn(service_db: ServiceDatabase) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(service_db.url)
    yield connection
    await connection.close()


async def test_rows_are_queued_in_the_order_the_events_were_emitted(conn: asyncpg.Connection) -> None:
    events = [canceled_event(reason=str(n)) for n in range(5)]
    await write_together(conn, [outbox_rows(events)])
    rows = await conn.fetch("SELECT id, subject, payload::text FROM outbox ORDER BY seq")
    assert [(r["id"], r["subject"]) for r in rows] == [(e.id, e.subject) for e in events]
    assert [parse(r["payload"]) for r in rows] == events


async def test_unrelayed_rows_are_listed_oldest_first_or_only_those_written_recently(
    conn: asyncpg.Connection,
) -> None:
    old, recent = canceled_event(), canceled_event()
    await write_together(conn, [outbox_rows([old, recent])])
    await conn.execute("UPDATE outbox SET created_at = now() - interval '2 hours' WHERE id = $1", old.id)
    assert [(r.id, r.subject) for r in await unrelayed(conn)] == [
        (old.id, old.subject),
        (recent.id, recent.subject),
    ]
    assert [r.id for r in await unrelayed(conn, written_within=timedelta(hours=1))] == [recent.id]
    waited = [datetime.now(UTC) - r.created_at for r in await unrelayed(conn)]
    assert waited[0] > timedelta(hours=2) > timedelta(minutes=1) > waited[1]  # how long each has waited


async def test_the_relay_position_says_what_waits_and_whether_a_slot_is_kept(
    conn: asyncpg.Connection, service_db: ServiceDatabase
) -> None:
    slot = slot_name(service_db.service)
    empty = await relay_position(conn, slot)
    assert (empty.slot_exists, empty.relay_connected, empty.lag_bytes, empty.backlog) == (
        False,
        False,
        None,
        0,
    )
    assert empty.oldest_seconds is None

    await conn.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot)
    await write_together(conn, [outbox_rows([canceled_event(), canceled_event()])])
    await conn.execute("UPDATE outbox SET created_at = now() - interval '1 minute'")
    waiting = await relay_position(conn, slot)
    assert (waiting.slot_exists, waiting.relay_connected, waiting.backlog) == (True, False, 2)
    assert waiting.lag_bytes is not None and waiting.lag_bytes > 0  # the rows' WAL, not confirmed by anyone
    assert waiting.oldest_seconds is not None and waiting.oldest_seconds >= 60


async def test_the_relay_position_says_whether_a_relay_streams_the_slot(
    conn: asyncpg.Connection, service_db: ServiceDatabase
) -> None:
    slot = slot_name(service_db.service)
    await conn.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot)
    assert not (await relay_position(conn, slot)).relay_connected
    streaming = psycopg2.connect(service_db.url, connection_factory=LogicalReplicationConnection)
    try:
        options = {"proto_version": "1", "publication_names": PUBLICATION}
        streaming.cursor().start_replication(slot_name=slot, decode=False, options=options)
        assert (await relay_position(conn, slot)).relay_connected
    finally:
        streaming.close()
