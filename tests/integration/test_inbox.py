"""The inbox: an event delivered twice has one effect, through the real consumer runner."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from oms.kernel.broker import JetStreamBroker, Outgoing
from oms.kernel.consumer import ConsumerRunner, one_at_a_time
from oms.kernel.events import Envelope
from oms.kernel.inbox import first_delivery
from oms.kernel.outbox import OutsideTransaction
from tests.conftest import execute
from tests.integration.conftest import ServiceDatabase, canceled_event


@pytest.fixture
async def pool(service_db: ServiceDatabase) -> AsyncIterator[asyncpg.Pool]:
    execute(service_db.url, "CREATE TABLE effects (event_id uuid NOT NULL, reason text NOT NULL)")
    created = await asyncpg.create_pool(service_db.url, min_size=1, max_size=4)
    assert created is not None
    yield created
    await created.close()


def recording_handler(pool: asyncpg.Pool):  # type: ignore[no-untyped-def]
    async def handle(event: Envelope) -> None:
        async with pool.acquire() as conn, conn.transaction():
            if await first_delivery(conn, event.id):
                await conn.execute(
                    "INSERT INTO effects VALUES ($1, $2)", event.id, getattr(event.data, "reason", "")
                )

    return handle


async def test_the_same_event_delivered_twice_has_one_effect(
    broker: JetStreamBroker, pool: asyncpg.Pool
) -> None:
    event = canceled_event()
    # A redelivery after the broker's duplicate window: the same event under another message id.
    await broker.publish([Outgoing(event.subject, event.to_json(), f"{event.id}")])
    await broker.publish([Outgoing(event.subject, event.to_json(), f"{event.id}:again")])
    runner = ConsumerRunner(broker, "account", one_at_a_time(recording_handler(pool)), fetch_timeout=0.5)

    handled = 0
    while handled < 2:
        handled += await runner.run_once()

    assert await pool.fetchval("SELECT count(*) FROM effects WHERE event_id = $1", event.id) == 1
    assert await runner.run_once() == 0  # both deliveries were acknowledged


async def test_first_delivery_is_true_once_and_again_after_a_rollback(pool: asyncpg.Pool) -> None:
    event_id = canceled_event().id
    async with pool.acquire() as conn:
        rolled_back = conn.transaction()
        await rolled_back.start()
        assert await first_delivery(conn, event_id)
        await rolled_back.rollback()
        async with conn.transaction():
            assert await first_delivery(conn, event_id)
        async with conn.transaction():
            assert not await first_delivery(conn, event_id)


async def test_first_delivery_outside_a_transaction_is_refused(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(OutsideTransaction):
            await first_delivery(conn, canceled_event().id)
