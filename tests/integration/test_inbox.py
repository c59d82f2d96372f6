"""The inbox: an event delivered twice has one effect, through the real consumer runner and a unit of work."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest

from oms.kernel import inbox
from oms.kernel.broker import JetStreamBroker, Outgoing
from oms.kernel.consumer import ConsumerRunner, Outcome
from oms.kernel.events import AnyEvent, Envelope, OrderCanceled
from oms.kernel.sql import Write
from oms.kernel.unit_of_work import Stage, UnitOfWorkFactory, postgres_unit_of_work
from tests.conftest import execute
from tests.integration.conftest import ServiceDatabase, canceled_event


class Effects:
    """A repository with one kind of write: the effect an event had."""

    def __init__(self, conn: asyncpg.Connection, stage: Stage) -> None:
        self._stage = stage

    def record(self, event_id: uuid.UUID, reason: str) -> None:
        self._stage(Write("INSERT INTO effects VALUES ($1, $2)", (event_id, reason)))


@pytest.fixture
async def units(service_db: ServiceDatabase) -> AsyncIterator[UnitOfWorkFactory[Effects]]:
    execute(service_db.url, "CREATE TABLE effects (event_id uuid NOT NULL, reason text NOT NULL)")
    pool = await asyncpg.create_pool(service_db.url, min_size=1, max_size=4)
    assert pool is not None
    yield postgres_unit_of_work(pool, Effects)
    await pool.close()


def effects(service_db: ServiceDatabase, event_id: uuid.UUID) -> int:
    [(count,)] = execute(service_db.url, f"SELECT count(*) FROM effects WHERE event_id = '{event_id}'")
    return int(str(count))


async def test_the_same_event_delivered_twice_has_one_effect(
    broker: JetStreamBroker, units: UnitOfWorkFactory[Effects], service_db: ServiceDatabase
) -> None:
    async def handle(envelopes: Sequence[Envelope[AnyEvent]]) -> list[Outcome]:
        async with units() as tx:
            for envelope in await tx.inbox.first_deliveries(envelopes):
                assert isinstance(envelope.event, OrderCanceled)
                tx.repository.record(envelope.id, envelope.event.reason)
        return [None] * len(envelopes)

    event = canceled_event()
    # A redelivery after the broker's duplicate window: the same event under another message id.
    await broker.publish([Outgoing(event.subject, event.to_json(), f"{event.id}")])
    await broker.publish([Outgoing(event.subject, event.to_json(), f"{event.id}:again")])
    runner = ConsumerRunner(broker, "account", handle, batch=1, fetch_timeout=0.5)

    handled = 0
    while handled < 2:
        handled += await runner.run_once()

    assert effects(service_db, event.id) == 1
    assert await runner.run_once() == 0  # both deliveries were acknowledged


async def test_first_delivery_is_fresh_again_after_a_rollback_or_forget(
    units: UnitOfWorkFactory[Effects],
) -> None:
    event = canceled_event()
    with pytest.raises(RuntimeError):
        async with units() as tx:
            assert await tx.inbox.first_deliveries([event]) == [event]
            raise RuntimeError("the effect failed")
    async with units() as tx:
        assert await tx.inbox.first_deliveries([event]) == [event]
        tx.inbox.forget([event.id])  # not applied after all: delivered again later
    async with units() as tx:
        assert await tx.inbox.first_deliveries([event, event]) == [event]
    async with units() as tx:
        assert await tx.inbox.first_deliveries([event]) == []


async def test_operators_see_which_events_were_applied_and_how_many_are_remembered(
    units: UnitOfWorkFactory[Effects], service_db: ServiceDatabase
) -> None:
    applied, forgotten, never = canceled_event(), canceled_event(), canceled_event()
    async with units() as tx:
        assert await tx.inbox.first_deliveries([applied, forgotten]) == [applied, forgotten]
        tx.inbox.forget([forgotten.id])
    conn = await asyncpg.connect(service_db.url)
    try:
        assert [await inbox.recorded(conn, e.id) for e in (applied, forgotten, never)] == [True, False, False]
        assert await inbox.size(conn) == 1
    finally:
        await conn.close()
