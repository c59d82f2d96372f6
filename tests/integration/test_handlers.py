"""The order and account event handlers against real PostgreSQL: redelivery, reordering and races.

Every event type is delivered again (the same envelope, as the broker redelivers it) and must have no second
effect: balances, reservations, tombstones, ledger rows and outbox rows are counted before and after.
Events are sent through their wire form (`to_json` → `parse`), as the consumer runner hands them over.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any

import asyncpg
import pytest

from oms.account import domain as account_domain
from oms.account import handlers as account_handlers
from oms.account.domain import NOT_RESERVED_BEFORE_CANCEL
from oms.account.handlers import InconsistentEvent
from oms.account.store import Accounts
from oms.kernel.broker import MAX_DELIVER, DeadLetter, JetStreamBroker, Outgoing
from oms.kernel.consumer import ConsumerRunner, Outcome, RetryPolicy
from oms.kernel.db import create_pool, migrate
from oms.kernel.dlq import list_dead_letters, replay
from oms.kernel.events import (
    AnyEvent,
    Envelope,
    FundsRejected,
    FundsReserved,
    OrderCanceled,
    OrderCreated,
    OrderMatched,
    parse,
)
from oms.kernel.money import Side
from oms.kernel.settings import ExecutionMode
from oms.kernel.unit_of_work import UnitOfWorkFactory, postgres_unit_of_work
from oms.order import handlers as order_handlers
from oms.order.domain import OrderPlaced, PlaceOrder, place_order
from oms.order.handlers import UnknownOrder, cancel, change_order
from oms.order.store import Orders
from oms.order.store import get as get_order

D = Decimal


# --- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def account_pool(make_database: Callable[[str], str]) -> AsyncIterator[asyncpg.Pool]:
    url = make_database("account")
    migrate("account", url)
    pool = await create_pool(url, min_size=2, max_size=10)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def order_pool(make_database: Callable[[str], str]) -> AsyncIterator[asyncpg.Pool]:
    url = make_database("order")
    migrate("order", url)
    pool = await create_pool(url, min_size=2, max_size=10)
    yield pool
    await pool.close()


@dataclass(frozen=True)
class Service:
    """A service's batch handler, as the consumer runner calls it, and one event at a time."""

    handle_batch: Callable[[Sequence[Envelope[AnyEvent]]], Awaitable[list[Outcome]]]

    async def handle(self, envelope: Envelope[AnyEvent]) -> None:
        """Apply one event at most once; raises what kept it from being applied."""
        [outcome] = await self.handle_batch([envelope])
        if outcome is not None:
            raise outcome


def account_service(pool: asyncpg.Pool) -> Service:
    return Service(partial(account_handlers.handle_batch, postgres_unit_of_work(pool, Accounts)))


def order_service(pool: asyncpg.Pool, mode: ExecutionMode) -> Service:
    return Service(partial(order_handlers.handle_batch, postgres_unit_of_work(pool, Orders), mode))


def orders_unit_of_work(pool: asyncpg.Pool) -> UnitOfWorkFactory[Orders]:
    return postgres_unit_of_work(pool, Orders)


@pytest.fixture
def account(account_pool: asyncpg.Pool) -> Service:
    return account_service(account_pool)


# --- helpers -----------------------------------------------------------------------------------------------


def over_the_wire(envelope: Envelope[AnyEvent]) -> Envelope[AnyEvent]:
    """The event as a consumer receives it: serialized and parsed again."""
    parsed = parse(envelope.to_json())
    assert parsed == envelope
    return parsed


async def deposit(pool: asyncpg.Pool, customer: uuid.UUID, asset: str, amount: str) -> None:
    """A deposit as the account API makes it (one unit of work: balance, ledger entry)."""
    async with postgres_unit_of_work(pool, Accounts)() as tx:
        balances = await tx.repository.lock_balances([(customer, asset)], create=[(customer, asset)])
        effect = account_domain.deposit(balances.get((customer, asset)), customer, asset, D(amount))
        assert effect.refused is None
        tx.repository.store([effect])


@dataclass(frozen=True)
class Terms:
    order_id: uuid.UUID
    customer_id: uuid.UUID
    asset: str
    side: Side
    size: Decimal
    price: Decimal

    @property
    def _ids(self) -> dict[str, Any]:
        return {"order_id": self.order_id, "customer_id": self.customer_id, "occurred_at": datetime.now(UTC)}

    def created(self) -> Envelope[AnyEvent]:
        return Envelope.of(
            OrderCreated(**self._ids, asset_name=self.asset, side=self.side, size=self.size, price=self.price)
        )

    def canceled(self, reason: str = "canceled by customer") -> Envelope[AnyEvent]:
        return Envelope.of(OrderCanceled(**self._ids, reason=reason))

    def matched(self, size: Decimal | None = None) -> Envelope[AnyEvent]:
        return Envelope.of(
            OrderMatched(
                **self._ids, asset_name=self.asset, side=self.side, size=size or self.size, price=self.price
            )
        )

    def reserved(self, amount: Decimal | None = None) -> Envelope[AnyEvent]:
        reserved_asset = "TRY" if self.side is Side.BUY else self.asset
        return Envelope.of(
            FundsReserved(
                **self._ids,
                reservation_id=uuid.uuid4(),
                asset_name=reserved_asset,
                amount=amount or (self.size * self.price if self.side is Side.BUY else self.size),
            )
        )

    def rejected(self, reason: str = "insufficient usable TRY") -> Envelope[AnyEvent]:
        return Envelope.of(FundsRejected(**self._ids, reason=reason))


def terms(side: Side = Side.BUY, size: str = "2", price: str = "10.25", asset: str = "AAPL") -> Terms:
    return Terms(uuid.uuid4(), uuid.uuid4(), asset, side, D(size), D(price))


@dataclass(frozen=True)
class AccountState:
    """Everything the account database holds about one customer, and the inbox size."""

    balances: dict[str, tuple[Decimal, Decimal]]
    reservations: list[tuple[Any, ...]]
    tombstones: list[tuple[Any, ...]]
    ledger: list[tuple[Any, ...]]
    outbox: list[tuple[str, str]]  # (subject, event type) of the customer's events, in insertion order
    inbox: int

    def ledger_kinds(self, order_id: uuid.UUID) -> list[str]:
        return [row[0] for row in self.ledger if row[3] == order_id]


async def account_state(pool: asyncpg.Pool, customer: uuid.UUID) -> AccountState:
    async with pool.acquire() as conn:
        balances = {
            r["asset_name"]: (r["total_size"], r["usable_size"])
            for r in await conn.fetch(
                "SELECT asset_name, total_size, usable_size FROM assets WHERE customer_id = $1", customer
            )
        }
        reservations = [
            tuple(r)
            for r in await conn.fetch(
                "SELECT order_id, asset_name, amount, status FROM reservations WHERE customer_id = $1 "
                "ORDER BY created_at, id",
                customer,
            )
        ]
        tombstones = [
            tuple(r)
            for r in await conn.fetch(
                "SELECT order_id, reason FROM tombstones WHERE customer_id = $1 ORDER BY order_id", customer
            )
        ]
        ledger = [
            tuple(r)
            for r in await conn.fetch(
                "SELECT kind, delta_total, delta_usable, order_id FROM ledger WHERE customer_id = $1 "
                "ORDER BY seq",
                customer,
            )
        ]
        outbox = [
            (r["subject"], r["type"])
            for r in await conn.fetch(
                "SELECT subject, payload->>'type' AS type FROM outbox WHERE payload->>'customerId' = $1 "
                "ORDER BY seq",
                str(customer),
            )
        ]
        inbox = await conn.fetchval("SELECT count(*) FROM inbox")
    return AccountState(balances, reservations, tombstones, ledger, outbox, inbox)


async def handle_twice(
    handler: Service, event: Envelope[AnyEvent], state: Callable[[], Any]
) -> tuple[Any, Any]:
    """Handle `event`, then its redelivery; the state after each."""
    await handler.handle(over_the_wire(event))
    first = await state()
    await handler.handle(over_the_wire(event))
    return first, await state()


# --- account: redelivery of every event type ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "reserved_asset", "amount"), [(Side.BUY, "TRY", D("20.50")), (Side.SELL, "AAPL", D(2))]
)
async def test_order_created_redelivered_reserves_once(
    account: Service, account_pool: asyncpg.Pool, side: Side, reserved_asset: str, amount: Decimal
) -> None:
    order = terms(side)
    await deposit(account_pool, order.customer_id, "TRY", "100")
    await deposit(account_pool, order.customer_id, "AAPL", "5")
    before = await account_state(account_pool, order.customer_id)

    first, second = await handle_twice(
        account, order.created(), lambda: account_state(account_pool, order.customer_id)
    )

    held_total, held_usable = before.balances[reserved_asset]
    assert first.balances[reserved_asset] == (held_total, held_usable - amount)
    assert first.reservations == [(order.order_id, reserved_asset, amount, "HELD")]
    assert first.ledger_kinds(order.order_id) == ["RESERVE"]
    assert first.outbox == [("oms.funds.reserved", "funds.reserved")]
    assert first.inbox == before.inbox + 1
    assert second == first


async def test_order_created_without_funds_redelivered_rejects_once(
    account: Service, account_pool: asyncpg.Pool
) -> None:
    order = terms(Side.BUY, size="3", price="40")
    await deposit(account_pool, order.customer_id, "TRY", "100")
    before = await account_state(account_pool, order.customer_id)

    first, second = await handle_twice(
        account, order.created(), lambda: account_state(account_pool, order.customer_id)
    )

    assert first.balances == before.balances
    assert first.reservations == []
    assert first.ledger == before.ledger
    assert [t[0] for t in first.tombstones] == [order.order_id]
    assert "insufficient usable TRY" in first.tombstones[0][1]
    assert first.outbox == [("oms.funds.rejected", "funds.rejected")]
    assert second == first


async def test_order_canceled_redelivered_releases_once(account: Service, account_pool: asyncpg.Pool) -> None:
    order = terms(Side.BUY, size="4", price="5")
    await deposit(account_pool, order.customer_id, "TRY", "100")
    await account.handle(over_the_wire(order.created()))

    first, second = await handle_twice(
        account, order.canceled(), lambda: account_state(account_pool, order.customer_id)
    )

    assert first.balances == {"TRY": (D(100), D(100))}
    assert first.reservations == [(order.order_id, "TRY", D(20), "RELEASED")]
    assert first.ledger_kinds(order.order_id) == ["RESERVE", "RELEASE"]
    assert first.outbox == [("oms.funds.reserved", "funds.reserved")]  # a release is not answered
    assert second == first


@pytest.mark.parametrize(
    ("side", "expected"),
    [
        (Side.BUY, {"TRY": (D("79.5"), D("79.5")), "AAPL": (D(7), D(7))}),
        (Side.SELL, {"TRY": (D("120.5"), D("120.5")), "AAPL": (D(3), D(3))}),
    ],
)
async def test_order_matched_redelivered_settles_once(
    account: Service,
    account_pool: asyncpg.Pool,
    side: Side,
    expected: dict[str, tuple[Decimal, Decimal]],
) -> None:
    order = terms(side, size="2", price="10.25")
    await deposit(account_pool, order.customer_id, "TRY", "100")
    await deposit(account_pool, order.customer_id, "AAPL", "5")
    await account.handle(over_the_wire(order.created()))

    first, second = await handle_twice(
        account, order.matched(), lambda: account_state(account_pool, order.customer_id)
    )

    assert first.balances == expected
    assert [r[3] for r in first.reservations] == ["SETTLED"]
    assert first.ledger_kinds(order.order_id) == ["RESERVE", "SETTLE_DEBIT", "SETTLE_CREDIT"]
    assert second == first


async def test_repeated_events_under_new_ids_change_no_balance(
    account: Service, account_pool: asyncpg.Pool
) -> None:
    """A release request (a second order.canceled) and re-sent answers carry new event ids: the inbox does
    not catch them, the reservation's state must."""
    settled = terms(Side.BUY, size="1", price="10")
    released = Terms(uuid.uuid4(), settled.customer_id, "MSFT", Side.BUY, D(1), D(10))
    await deposit(account_pool, settled.customer_id, "TRY", "100")
    for event in (settled.created(), settled.matched(), released.created(), released.canceled()):
        await account.handle(over_the_wire(event))
    before = await account_state(account_pool, settled.customer_id)

    for event in (settled.created(), settled.matched(), released.created(), released.canceled()):
        await account.handle(over_the_wire(event))
    # A cancel of a settled order cannot be honoured: refused (then dead-lettered), and it changes nothing.
    with pytest.raises(InconsistentEvent, match="SETTLED"):
        await account.handle(over_the_wire(settled.canceled()))
    after = await account_state(account_pool, settled.customer_id)

    assert after.balances == before.balances == {"TRY": (D(90), D(90)), "AAPL": (D(1), D(1))}
    assert after.reservations == before.reservations
    assert after.ledger == before.ledger
    assert after.tombstones == before.tombstones == []


# --- account: reordering and races -------------------------------------------------------------------------


async def test_order_canceled_before_created_rejects_the_late_created(
    account: Service, account_pool: asyncpg.Pool
) -> None:
    order = terms(Side.BUY, size="1", price="10")
    await deposit(account_pool, order.customer_id, "TRY", "100")
    before = await account_state(account_pool, order.customer_id)

    await account.handle(over_the_wire(order.canceled()))
    await account.handle(over_the_wire(order.created()))
    after = await account_state(account_pool, order.customer_id)

    assert after.balances == before.balances == {"TRY": (D(100), D(100))}
    assert after.reservations == []
    assert after.ledger == before.ledger
    assert after.tombstones == [(order.order_id, NOT_RESERVED_BEFORE_CANCEL)]
    assert after.outbox == [("oms.funds.rejected", "funds.rejected")]
    async with account_pool.acquire() as conn:
        payload = await conn.fetchval(
            "SELECT payload FROM outbox WHERE payload->>'orderId' = $1", str(order.order_id)
        )
    assert payload["data"]["reason"] == NOT_RESERVED_BEFORE_CANCEL


async def test_concurrent_created_and_canceled_never_leave_funds_held(
    account: Service, account_pool: asyncpg.Pool
) -> None:
    customer = uuid.uuid4()
    await deposit(account_pool, customer, "TRY", "1000")
    orders = [Terms(uuid.uuid4(), customer, "AAPL", Side.BUY, D(1), D(7)) for _ in range(30)]
    for i, order in enumerate(orders):
        pair = [order.created(), order.canceled()]
        if i % 2:
            pair.reverse()
        await asyncio.gather(*(account.handle(over_the_wire(e)) for e in pair))

    state = await account_state(account_pool, customer)
    assert state.balances == {"TRY": (D(1000), D(1000))}
    held = [r for r in state.reservations if r[3] == "HELD"]
    assert held == []
    answers = {t for _, t in state.outbox}
    assert answers <= {"funds.reserved", "funds.rejected"}
    for order in orders:
        reservation = [r for r in state.reservations if r[0] == order.order_id]
        tombstone = [t for t in state.tombstones if t[0] == order.order_id]
        # Either reserved then released, or remembered as canceled and never reserved: exactly one.
        assert (reservation == [(order.order_id, "TRY", D(7), "RELEASED")]) != (len(tombstone) == 1)
        kinds = state.ledger_kinds(order.order_id)
        assert kinds in (["RESERVE", "RELEASE"], [])


# --- account: an inconsistent event is refused and changes nothing -----------------------------------------


async def test_order_matched_without_a_reservation_raises_and_changes_nothing(
    account: Service, account_pool: asyncpg.Pool
) -> None:
    order = terms(Side.BUY, size="1", price="10")
    await deposit(account_pool, order.customer_id, "TRY", "100")
    before = await account_state(account_pool, order.customer_id)
    matched = order.matched()

    for _ in range(2):  # each retry fails the same way: the consumer then dead-letters it
        with pytest.raises(InconsistentEvent, match="nothing is reserved"):
            await account.handle(over_the_wire(matched))

    after = await account_state(account_pool, order.customer_id)
    assert after == before  # no AAPL balance created, no ledger row, no inbox row (it can be retried)
    async with account_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", matched.id) == 0


async def test_order_matched_after_release_or_on_other_terms_raises_and_changes_nothing(
    account: Service, account_pool: asyncpg.Pool
) -> None:
    released = terms(Side.BUY, "1", "10")
    other_terms = Terms(uuid.uuid4(), released.customer_id, "AAPL", Side.BUY, D(1), D(10))
    await deposit(account_pool, released.customer_id, "TRY", "100")
    for event in (released.created(), released.canceled(), other_terms.created()):
        await account.handle(over_the_wire(event))
    before = await account_state(account_pool, released.customer_id)

    with pytest.raises(InconsistentEvent, match="released"):
        await account.handle(over_the_wire(released.matched()))
    with pytest.raises(InconsistentEvent, match="more than its reservation"):
        await account.handle(over_the_wire(other_terms.matched(size=D(2))))

    assert await account_state(account_pool, released.customer_id) == before


async def test_inconsistent_event_is_retried_dead_lettered_and_settles_when_replayed_after_the_fix(
    account: Service, account_pool: asyncpg.Pool, broker: JetStreamBroker
) -> None:
    """Through the real consumer runner: the order.matched without a reservation fails every delivery, goes
    to the dead-letter queue with the handler's error, and once its reservation exists a replay settles it."""
    order = terms(Side.BUY, size="3", price="2.5")
    await deposit(account_pool, order.customer_id, "TRY", "100")
    matched = order.matched()
    await broker.publish([Outgoing(matched.subject, matched.to_json(), str(matched.id))])
    runner = ConsumerRunner(
        broker, "account", account.handle_batch, policy=RetryPolicy(nak_delays=(0.05,)), fetch_timeout=0.2
    )

    async def dead_letters() -> list[DeadLetter]:
        for _ in range(200):
            letters = await list_dead_letters(broker)
            if letters:
                return letters
            await runner.run_once()
        raise AssertionError("never dead-lettered")

    [letter] = await dead_letters()
    assert letter.deliveries == MAX_DELIVER
    assert letter.error == f"InconsistentEvent: order {order.order_id} was matched but nothing is reserved"
    assert (await account_state(account_pool, order.customer_id)).balances == {"TRY": (D(100), D(100))}

    await account.handle(over_the_wire(order.created()))  # the cause is gone: the reservation exists
    assert await replay(broker, letter.id) == 1
    while await runner.run_once():
        pass
    state = await account_state(account_pool, order.customer_id)
    assert state.balances == {"TRY": (D("92.5"), D("92.5")), "AAPL": (D(3), D(3))}
    assert state.ledger_kinds(order.order_id) == ["RESERVE", "SETTLE_DEBIT", "SETTLE_CREDIT"]
    assert await list_dead_letters(broker) == []


# --- order: redelivery of funds.reserved and funds.rejected, both modes ------------------------------------


@dataclass(frozen=True)
class OrderState:
    status: str
    reserved: bool
    reason: str | None
    outbox: list[str]  # event types of the order's outbox rows, in insertion order
    inbox: int


async def place(pool: asyncpg.Pool, side: Side = Side.BUY) -> Terms:
    """An order placed as the API places it (order row + order.created in one transaction)."""
    placed = place_order(PlaceOrder(uuid.uuid4(), "AAPL", side, D(2), D("10.25")), datetime.now(UTC))
    assert isinstance(placed, OrderPlaced)
    async with orders_unit_of_work(pool)() as tx:
        await order_handlers.place_orders(tx, [placed])
    o = placed.order
    return Terms(o.id, o.customer_id, o.asset_name, o.side, o.size, o.price)


async def order_state(pool: asyncpg.Pool, order_id: uuid.UUID) -> OrderState:
    async with pool.acquire() as conn:
        order = await get_order(conn, order_id)
        assert order is not None
        outbox = [
            r["type"]
            for r in await conn.fetch(
                "SELECT payload->>'type' AS type FROM outbox WHERE payload->>'orderId' = $1 ORDER BY seq",
                str(order_id),
            )
        ]
        inbox = await conn.fetchval("SELECT count(*) FROM inbox")
    return OrderState(order.status.value, order.reserved, order.reason, outbox, inbox)


MODES = [ExecutionMode.IMMEDIATE, ExecutionMode.MANUAL]


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
async def test_funds_reserved_redelivered_has_one_effect(
    order_pool: asyncpg.Pool, mode: ExecutionMode
) -> None:
    handlers = order_service(order_pool, mode)
    order = await place(order_pool)
    before = await order_state(order_pool, order.order_id)

    first, second = await handle_twice(
        handlers, order.reserved(), lambda: order_state(order_pool, order.order_id)
    )

    if mode is ExecutionMode.IMMEDIATE:
        assert (first.status, first.reserved) == ("MATCHED", True)
        assert first.outbox == ["order.created", "order.matched"]
    else:
        assert (first.status, first.reserved) == ("PENDING", True)
        assert first.outbox == ["order.created"]
    assert first.inbox == before.inbox + 1
    assert second == first

    # The same answer under a new event id (the account never sends one, but it must be harmless too).
    await handlers.handle(over_the_wire(order.reserved()))
    assert (await order_state(order_pool, order.order_id)).outbox == first.outbox


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
async def test_funds_rejected_redelivered_cancels_once(order_pool: asyncpg.Pool, mode: ExecutionMode) -> None:
    handlers = order_service(order_pool, mode)
    order = await place(order_pool)

    first, second = await handle_twice(
        handlers,
        order.rejected("insufficient usable TRY: 20.5 needed"),
        lambda: order_state(order_pool, order.order_id),
    )

    assert (first.status, first.reserved) == ("CANCELED", False)
    assert first.reason == "insufficient usable TRY: 20.5 needed"
    assert first.outbox == ["order.created", "order.canceled"]
    assert second == first
    await handlers.handle(over_the_wire(order.rejected("another answer")))
    assert await order_state(order_pool, order.order_id) == OrderState(
        "CANCELED", False, first.reason, first.outbox, first.inbox + 1
    )


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
async def test_funds_reserved_for_a_canceled_order_asks_the_account_to_release(
    order_pool: asyncpg.Pool, mode: ExecutionMode
) -> None:
    handlers = order_service(order_pool, mode)
    order = await place(order_pool)
    await change_order(orders_unit_of_work(order_pool), order.order_id, cancel("canceled by customer"))

    first, second = await handle_twice(
        handlers, order.reserved(), lambda: order_state(order_pool, order.order_id)
    )

    assert (first.status, first.reserved, first.reason) == ("CANCELED", False, "canceled by customer")
    assert first.outbox == ["order.created", "order.canceled", "order.canceled"]  # the second: release it
    assert second == first


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
async def test_funds_rejected_after_funds_reserved_is_ignored(
    order_pool: asyncpg.Pool, mode: ExecutionMode
) -> None:
    handlers = order_service(order_pool, mode)
    order = await place(order_pool)
    await handlers.handle(over_the_wire(order.reserved()))
    before = await order_state(order_pool, order.order_id)

    await handlers.handle(over_the_wire(order.rejected()))

    after = await order_state(order_pool, order.order_id)
    assert (after.status, after.reserved, after.outbox) == (before.status, True, before.outbox)


async def test_event_for_an_unknown_order_raises_and_is_not_recorded(order_pool: asyncpg.Pool) -> None:
    handlers = order_service(order_pool, ExecutionMode.IMMEDIATE)
    event = terms().reserved()
    with pytest.raises(UnknownOrder):
        await handlers.handle(over_the_wire(event))
    async with order_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", event.id) == 0


# --- both services: events shuffled and repeated, as at-least-once delivery may hand them over ------------


async def drain(pool: asyncpg.Pool, seen: set[uuid.UUID]) -> list[Envelope[AnyEvent]]:
    """The outbox events not taken yet, in commit order (what the relay would publish)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT id, payload::text AS payload FROM outbox ORDER BY seq")
    fresh = [parse(r["payload"]) for r in rows if r["id"] not in seen]
    seen.update(e.id for e in fresh)
    return fresh


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
async def test_cancel_racing_the_reservation_leaves_nothing_held(
    account: Service, account_pool: asyncpg.Pool, order_pool: asyncpg.Pool, mode: ExecutionMode
) -> None:
    """A customer cancels while the account reserves: whatever order the events arrive in, and however often,
    the order ends CANCELED and its funds usable again."""
    orders_handler = order_service(order_pool, mode)
    seen_order: set[uuid.UUID] = set(e.id for e in await drain(order_pool, set()))
    seen_account: set[uuid.UUID] = set(e.id for e in await drain(account_pool, set()))
    order = await place(order_pool)
    await deposit(account_pool, order.customer_id, "TRY", "100")

    [created] = await drain(order_pool, seen_order)
    await account.handle(created)  # reserved; funds.reserved is on its way to the order service
    await change_order(orders_unit_of_work(order_pool), order.order_id, cancel("canceled by customer"))
    [canceled] = await drain(order_pool, seen_order)
    [reserved] = await drain(account_pool, seen_account)
    await orders_handler.handle(reserved)  # the order is CANCELED already: asks for a release
    [release] = await drain(order_pool, seen_order)
    for event in (release, canceled, release, created, canceled):  # reordered and repeated
        await account.handle(over_the_wire(event))

    final = await order_state(order_pool, order.order_id)
    assert final.status == "CANCELED"
    state = await account_state(account_pool, order.customer_id)
    assert state.balances == {"TRY": (D(100), D(100))}
    assert [r[3] for r in state.reservations] == ["RELEASED"]
    assert state.ledger_kinds(order.order_id) == ["RESERVE", "RELEASE"]
