"""A cancel and a match racing for the same PENDING order, on PostgreSQL: both decided on what they read
before either wrote, and both writing at once. One wins; the other's unit fails whole, so the order ends in
one state and the outbox says the same."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from oms.kernel.db import create_pool, migrate
from oms.kernel.events import OrderCanceled, OrderMatched, parse
from oms.kernel.money import Side
from oms.kernel.settings import ExecutionMode
from oms.kernel.sql import WriteConflict
from oms.kernel.unit_of_work import UnitOfWorkFactory, postgres_unit_of_work
from oms.order.domain import (
    CANCELED,
    MATCHED,
    Order,
    OrderEvent,
    OrderPlaced,
    PlaceOrder,
    TransitionRefused,
    place_order,
)
from oms.order.store import Orders

NOW = datetime(2026, 1, 2, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
async def order_pool(make_database: Callable[[str], str]) -> AsyncIterator[asyncpg.Pool]:
    url = make_database("order_races")
    migrate("order", url)
    pool = await create_pool(url, min_size=2, max_size=4)
    yield pool
    await pool.close()


async def reserved_order(units: UnitOfWorkFactory[Orders]) -> Order:
    """A PENDING order whose funds are reserved: it may be matched, and canceled."""
    placed = place_order(PlaceOrder(uuid.uuid4(), "AAPL", Side.BUY, Decimal(2), Decimal("10.5")), NOW)
    assert isinstance(placed, OrderPlaced)
    async with units() as tx:
        tx.repository.add(placed.order)
    async with units() as tx:
        order = await tx.repository.get(placed.order.id, for_update=True)
        assert order is not None
        order.reserve_funds_confirmed(ExecutionMode.MANUAL, NOW)
        tx.repository.save(order)
    return order


async def decide_then_write(
    units: UnitOfWorkFactory[Orders],
    order_id: uuid.UUID,
    change: Callable[[Order], list[OrderEvent] | TransitionRefused],
    everyone_has_read: asyncio.Barrier,
) -> bool:
    """Read the order without a lock, wait until the rival has read it too, then write the change; True if
    this unit committed, False if it lost the race."""
    try:
        async with units() as tx:
            order = await tx.repository.get(order_id)
            assert order is not None
            await everyone_has_read.wait()
            events = change(order)
            assert not isinstance(events, TransitionRefused)  # as far as this unit can tell
            tx.emit(*events)
            tx.repository.save(order)
    except WriteConflict:
        return False
    return True


async def test_a_cancel_and_a_match_decided_on_the_same_read_one_wins_and_only_its_event_is_published(
    order_pool: asyncpg.Pool,
) -> None:
    units = postgres_unit_of_work(order_pool, Orders)
    for _ in range(5):
        order = await reserved_order(units)
        everyone_has_read = asyncio.Barrier(2)
        canceled, matched = await asyncio.gather(
            decide_then_write(units, order.id, lambda o: o.cancel("by customer", NOW), everyone_has_read),
            decide_then_write(units, order.id, lambda o: o.match(NOW), everyone_has_read),
        )

        assert canceled != matched, "exactly one of them may win"
        async with units() as tx:
            stored = await tx.repository.get(order.id)
        assert stored is not None and stored.status is (CANCELED if canceled else MATCHED)
        payloads = await order_pool.fetch(
            "SELECT payload::text FROM outbox WHERE payload->>'orderId' = $1", str(order.id)
        )
        told = [type(parse(row["payload"]).event) for row in payloads]
        assert told == [OrderCanceled if canceled else OrderMatched]
