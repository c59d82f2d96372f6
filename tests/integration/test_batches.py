"""Batches of events in one transaction against real PostgreSQL: handling a batch must leave exactly what
handling its events one at a time leaves — with reordering, duplicates inside a batch, refused events in
the middle, and replicas handling batches of the same customers at once.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from oms.account.handlers import InconsistentEvent
from oms.kernel.consumer import Outcome
from oms.kernel.db import create_pool, migrate
from oms.kernel.events import AnyEvent, Envelope
from oms.kernel.money import Side
from oms.kernel.settings import ExecutionMode
from oms.order.domain import OrderPlaced, PlaceOrder, place_order
from oms.order.handlers import UnknownOrder, place_orders
from tests.integration.test_handlers import (
    Terms,
    account_service,
    account_state,
    deposit,
    order_service,
    orders_unit_of_work,
    over_the_wire,
)

D = Decimal


async def _pool(make_database: Callable[[str], str], service: str) -> asyncpg.Pool:
    url = make_database(service)
    migrate(service, url)
    return await create_pool(url, min_size=2, max_size=10)


@pytest.fixture(scope="module")
async def account_pools(make_database: Callable[[str], str]) -> AsyncIterator[list[asyncpg.Pool]]:
    pools = [await _pool(make_database, "account") for _ in range(2)]
    yield pools
    for pool in pools:
        await pool.close()


@pytest.fixture(scope="module")
async def order_pools(make_database: Callable[[str], str]) -> AsyncIterator[list[asyncpg.Pool]]:
    pools = [await _pool(make_database, "order") for _ in range(2)]
    yield pools
    for pool in pools:
        await pool.close()


def splits(events: list[Envelope[AnyEvent]], rng: random.Random) -> list[list[Envelope[AnyEvent]]]:
    """`events` cut into consecutive batches of random sizes."""
    batches, i = [], 0
    while i < len(events):
        size = rng.randint(1, 12)
        batches.append(events[i : i + size])
        i += size
    return batches


def account_events(customers: list[uuid.UUID], rng: random.Random) -> list[Envelope[AnyEvent]]:
    """Orders' events as they may reach the account: reordered, some twice, some cancels racing creation,
    some matches without a reservation (refused: inconsistent)."""
    events: list[Envelope[AnyEvent]] = []
    fates = ["match-unreserved"] + [
        rng.choice(["match", "match", "cancel", "cancel-first", "match-unreserved", "just-created"])
        for _ in range(11)
    ]
    for fate in fates:
        side = rng.choice([Side.BUY, Side.SELL])
        order = Terms(uuid.uuid4(), rng.choice(customers), "AAPL", side, D(rng.randint(1, 5)), D("7.25"))
        created = order.created()
        if fate == "match":
            events += [created, order.matched()]
        elif fate == "cancel":
            events += [created, order.canceled()]
        elif fate == "cancel-first":
            events += [order.canceled(), created]
        elif fate == "match-unreserved":
            events += [order.matched()]
        else:
            events += [created]
    # Redeliveries: some events again, right after themselves or later.
    for event in rng.sample(events, k=len(events) // 4):
        events.insert(rng.randint(events.index(event), len(events)), event)
    return [over_the_wire(e) for e in events]


async def handle_in_batches(handle: Any, batches: Sequence[Sequence[Envelope[AnyEvent]]]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for batch in batches:
        outcomes += await handle(batch)
    return outcomes


def failures(outcomes: list[Outcome]) -> list[str]:
    return [type(o).__name__ if o is not None else "" for o in outcomes]


@pytest.mark.parametrize("seed", range(8))
async def test_account_batches_leave_what_one_at_a_time_leaves(
    account_pools: list[asyncpg.Pool], seed: int
) -> None:
    rng = random.Random(seed)
    customers = [uuid.uuid4() for _ in range(3)]
    for pool in account_pools:
        for customer in customers:
            await deposit(pool, customer, "TRY", "60")
            await deposit(pool, customer, "AAPL", "6")
    events = account_events(customers, rng)
    batched, single = (account_service(pool) for pool in account_pools)

    outcomes = await handle_in_batches(batched.handle_batch, splits(events, rng))
    expected = await handle_in_batches(single.handle_batch, [[e] for e in events])

    assert failures(outcomes) == failures(expected)
    assert InconsistentEvent.__name__ in failures(outcomes)
    for customer in customers:
        got, want = [await account_state(pool, customer) for pool in account_pools]
        assert (got.balances, got.tombstones, got.ledger, got.outbox) == (
            want.balances,
            want.tombstones,
            want.ledger,
            want.outbox,
        )
        assert sorted(got.reservations) == sorted(want.reservations)


async def test_account_batch_applies_the_others_when_one_event_is_refused(
    account_pools: list[asyncpg.Pool],
) -> None:
    pool = account_pools[0]
    customer = uuid.uuid4()
    await deposit(pool, customer, "TRY", "100")
    fine, unreserved = (Terms(uuid.uuid4(), customer, "MSFT", Side.BUY, D(2), D(10)) for _ in range(2))
    batch = [over_the_wire(e) for e in (fine.created(), unreserved.matched(), fine.matched())]

    outcomes = await account_service(pool).handle_batch(batch)

    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], InconsistentEvent)
    state = await account_state(pool, customer)
    assert state.balances == {"TRY": (D(80), D(80)), "MSFT": (D(2), D(2))}
    assert state.ledger_kinds(unreserved.order_id) == []
    # The refused event is not in the inbox: its next delivery is tried again.
    assert await pool.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", batch[1].id) == 0


async def test_account_replicas_handling_batches_at_once_reserve_exactly_what_there_is(
    account_pools: list[asyncpg.Pool],
) -> None:
    """200 BUYs of 10 TRY each against 200 TRY, split into batches that 4 replicas handle concurrently
    (the same customers in many batches at once): exactly 20 reserved, 180 rejected, nothing deadlocks."""
    pool = account_pools[0]
    customers = [uuid.uuid4() for _ in range(2)]
    for customer in customers:
        await deposit(pool, customer, "TRY", "100")
    orders = [Terms(uuid.uuid4(), customers[i % 2], "GARAN", Side.BUY, D(1), D(10)) for i in range(200)]
    events = [over_the_wire(o.created()) for o in orders]
    rng = random.Random(7)
    rng.shuffle(events)
    batches = splits(events, rng)
    replicas = [account_service(pool) for _ in range(4)]

    outcomes = await asyncio.gather(*(replicas[i % 4].handle_batch(batch) for i, batch in enumerate(batches)))

    assert all(o is None for batch in outcomes for o in batch)
    for customer in customers:
        state = await account_state(pool, customer)
        assert state.balances == {"TRY": (D(100), D(0))}
        assert [t for _, t in state.outbox].count("funds.reserved") == 10
        assert [t for _, t in state.outbox].count("funds.rejected") == 90


def funds_events(orders: list[Terms], rng: random.Random) -> list[Envelope[AnyEvent]]:
    """The account's answers as they may reach the order service: reserved or rejected, some twice, some
    contradicting an earlier answer, and one for an order this database never had."""
    events: list[Envelope[AnyEvent]] = []
    for order in orders:
        answer = order.reserved() if rng.random() < 0.7 else order.rejected()
        events.append(answer)
        if rng.random() < 0.2:
            events.append(order.rejected("a late contradicting answer"))
    for event in rng.sample(events, k=len(events) // 4):
        events.insert(rng.randint(events.index(event), len(events)), event)
    stranger = Terms(uuid.uuid4(), uuid.uuid4(), "AAPL", Side.BUY, D(1), D(1))
    events.insert(rng.randint(0, len(events)), stranger.reserved())
    return [over_the_wire(e) for e in events]


async def place(pool: asyncpg.Pool, order: Terms) -> None:
    command = PlaceOrder(order.customer_id, order.asset, order.side, order.size, order.price)
    placed = place_order(command, datetime.now(UTC), order_id=order.order_id)
    assert isinstance(placed, OrderPlaced)
    async with orders_unit_of_work(pool)() as tx:
        await place_orders(tx, [placed])


async def order_rows(pool: asyncpg.Pool, orders: list[Terms]) -> list[tuple[Any, ...]]:
    rows = await pool.fetch(
        "SELECT id, status, reason, reserved FROM orders WHERE id = ANY($1::uuid[]) ORDER BY id",
        [o.order_id for o in orders],
    )
    return [tuple(r) for r in rows]


async def order_outbox(pool: asyncpg.Pool, orders: list[Terms]) -> list[tuple[str, str]]:
    rows = await pool.fetch(
        "SELECT payload->>'type' AS type, payload->>'orderId' AS order_id FROM outbox "
        "WHERE (payload->>'orderId')::uuid = ANY($1::uuid[]) ORDER BY seq",
        [o.order_id for o in orders],
    )
    return [(r["type"], r["order_id"]) for r in rows]


@pytest.mark.parametrize("mode", list(ExecutionMode))
@pytest.mark.parametrize("seed", range(4))
async def test_order_batches_leave_what_one_at_a_time_leaves(
    order_pools: list[asyncpg.Pool], mode: ExecutionMode, seed: int
) -> None:
    rng = random.Random(seed)
    customer = uuid.uuid4()
    orders = [Terms(uuid.uuid4(), customer, "AAPL", Side.BUY, D(1), D(3)) for _ in range(15)]
    for pool in order_pools:
        for order in orders:
            await place(pool, order)
    events = funds_events(orders, rng)
    batched, single = (order_service(pool, mode) for pool in order_pools)

    outcomes = await handle_in_batches(batched.handle_batch, splits(events, rng))
    expected = await handle_in_batches(single.handle_batch, [[e] for e in events])

    assert failures(outcomes) == failures(expected)
    assert failures(outcomes).count(UnknownOrder.__name__) >= 1
    got, want = [await order_rows(pool, orders) for pool in order_pools]
    assert got == want
    got_out, want_out = [await order_outbox(pool, orders) for pool in order_pools]
    assert got_out == want_out
