"""One contract, two implementations: every test here runs against the in-memory unit of work and
repositories (tests/fakes.py) and against PostgreSQL alike, so handler tests on the fakes say something
about the real thing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

import asyncpg
import pytest

from oms.account import commands, domain
from oms.account.domain import HELD, SETTLED, Problem, Refused
from oms.account.requests import (
    APPROVE,
    REJECT,
    Deposit,
    DepositStatus,
    Stamp,
    Step,
    WithdrawalStatus,
    approve_deposit,
)
from oms.account.store import Accounts
from oms.kernel.db import create_pool, migrate
from oms.kernel.errors import ApiError
from oms.kernel.events import Envelope, Event, OrderCanceled, OrderCreated, OrderMatched, parse
from oms.kernel.money import CASH, Side
from oms.kernel.settings import ExecutionMode
from oms.kernel.sql import WriteConflict
from oms.kernel.unit_of_work import InMemoryState, UnitOfWorkFactory, postgres_unit_of_work
from oms.order.domain import CANCELED, MATCHED, OrderPlaced, PlaceOrder, place_order
from oms.order.store import Orders
from tests.fakes import AccountTables, OrderTable, accounts_in_memory, orders_in_memory

R = TypeVar("R")
D = Decimal
NOW = datetime(2026, 1, 2, 9, 30, tzinfo=UTC)


@dataclass
class Backend(Generic[R]):
    """Units of work of one implementation, and what a reader sees of it once committed."""

    name: str
    unit_of_work: UnitOfWorkFactory[R]
    published: Callable[[], Awaitable[list[Envelope[Any]]]]  # the outbox, in order


@pytest.fixture(scope="module")
async def order_pool(make_database: Callable[[str], str]) -> AsyncIterator[asyncpg.Pool]:
    url = make_database("contract_order")
    migrate("order", url)
    pool = await create_pool(url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def account_pool(make_database: Callable[[str], str]) -> AsyncIterator[asyncpg.Pool]:
    url = make_database("contract_account")
    migrate("account", url)
    pool = await create_pool(url, min_size=1, max_size=4)
    yield pool
    await pool.close()


def _postgres_outbox(pool: asyncpg.Pool) -> Callable[[], Awaitable[list[Envelope[Any]]]]:
    async def published() -> list[Envelope[Any]]:
        rows = await pool.fetch("SELECT payload::text AS payload FROM outbox ORDER BY seq")
        return [parse(row["payload"]) for row in rows]

    return published


def _memory_outbox(state: InMemoryState) -> Callable[[], Awaitable[list[Envelope[Any]]]]:
    async def published() -> list[Envelope[Any]]:
        return list(state.outbox)

    return published


@pytest.fixture(params=["in-memory", "postgres"])
async def orders(request: pytest.FixtureRequest, order_pool: asyncpg.Pool) -> AsyncIterator[Backend[Orders]]:
    if request.param == "postgres":
        await order_pool.execute("TRUNCATE orders, outbox, inbox, idempotency_keys")
        yield Backend("postgres", postgres_unit_of_work(order_pool, Orders), _postgres_outbox(order_pool))
    else:
        state = InMemoryState()
        units: Any = orders_in_memory(state, OrderTable())
        yield Backend("in-memory", units, _memory_outbox(state))


@pytest.fixture(params=["in-memory", "postgres"])
async def accounts(
    request: pytest.FixtureRequest, account_pool: asyncpg.Pool
) -> AsyncIterator[Backend[Accounts]]:
    if request.param == "postgres":
        yield Backend(
            "postgres", postgres_unit_of_work(account_pool, Accounts), _postgres_outbox(account_pool)
        )
    else:
        state = InMemoryState()
        units: Any = accounts_in_memory(state, AccountTables())
        yield Backend("in-memory", units, _memory_outbox(state))


def new_order(side: Side = Side.BUY) -> OrderPlaced:
    placed = place_order(PlaceOrder(uuid.uuid4(), "AAPL", side, D(2), D("10.5")), NOW)
    assert isinstance(placed, OrderPlaced)
    return placed


def canceled(order_id: uuid.UUID) -> Event:
    return OrderCanceled(order_id=order_id, customer_id=uuid.uuid4(), occurred_at=NOW, reason="test")


# --- the unit of work ---------------------------------------------------------------------------------------


async def test_unit_of_work_events_emitted_are_published_in_order_once_it_ends(
    orders: Backend[Orders],
) -> None:
    placed = [new_order(), new_order()]
    async with orders.unit_of_work() as tx:
        tx.repository.add(*(p.order for p in placed))
        tx.emit(*(p.event for p in placed))
    assert [e.event for e in await orders.published()] == [p.event for p in placed]


async def test_unit_of_work_an_error_stores_and_publishes_nothing(orders: Backend[Orders]) -> None:
    placed = new_order()
    with pytest.raises(RuntimeError):
        async with orders.unit_of_work() as tx:
            tx.repository.add(placed.order)
            tx.emit(placed.event)
            raise RuntimeError("refused")
    async with orders.unit_of_work() as tx:
        assert await tx.repository.get(placed.order.id) is None
    assert await orders.published() == []


async def test_unit_of_work_staged_writes_are_not_seen_by_its_own_reads(orders: Backend[Orders]) -> None:
    placed = new_order()
    async with orders.unit_of_work() as tx:
        tx.repository.add(placed.order)
        assert await tx.repository.get(placed.order.id) is None  # handlers decide on what they read
    async with orders.unit_of_work() as tx:
        assert await tx.repository.get(placed.order.id) == placed.order


# --- the inbox ----------------------------------------------------------------------------------------------


async def test_inbox_an_event_is_fresh_once_even_if_delivered_twice_in_a_batch(
    orders: Backend[Orders],
) -> None:
    first, second = Envelope.of(canceled(uuid.uuid4())), Envelope.of(canceled(uuid.uuid4()))
    async with orders.unit_of_work() as tx:
        assert await tx.inbox.first_deliveries([first, second, first]) == [first, second]
    async with orders.unit_of_work() as tx:
        assert await tx.inbox.first_deliveries([second, first]) == []


async def test_inbox_a_rolled_back_or_forgotten_event_is_fresh_again(orders: Backend[Orders]) -> None:
    event = Envelope.of(canceled(uuid.uuid4()))
    with pytest.raises(RuntimeError):
        async with orders.unit_of_work() as tx:
            await tx.inbox.first_deliveries([event])
            raise RuntimeError("failed")
    async with orders.unit_of_work() as tx:
        assert await tx.inbox.first_deliveries([event]) == [event]
        tx.inbox.forget([event.id])
    async with orders.unit_of_work() as tx:
        assert await tx.inbox.first_deliveries([event]) == [event]


# --- idempotency keys ---------------------------------------------------------------------------------------


async def test_idempotency_key_a_retry_gets_the_first_answer_without_running_again(
    orders: Backend[Orders],
) -> None:
    runs: list[int] = []

    async def action() -> dict[str, Any]:
        runs.append(1)
        return {"id": str(len(runs))}

    request = ("POST", "/x", {"a": 1})
    for _ in range(2):
        async with orders.unit_of_work() as tx:
            assert await tx.idempotency.once("alice", "key-1", request, action) == {"id": "1"}
    assert len(runs) == 1
    async with orders.unit_of_work() as tx:
        with pytest.raises(ApiError) as refused:
            await tx.idempotency.once("alice", "key-1", ("POST", "/x", {"a": 2}), action)
    assert (refused.value.status_code, refused.value.error) == (
        422,
        "Idempotency-Key was already used for a different request",
    )
    async with orders.unit_of_work() as tx:  # keys are per principal
        assert await tx.idempotency.once("bob", "key-1", request, action) == {"id": "2"}


# --- orders -------------------------------------------------------------------------------------------------


async def test_orders_lock_finds_the_orders_it_has_and_skips_the_others(orders: Backend[Orders]) -> None:
    placed = [new_order(), new_order()]
    async with orders.unit_of_work() as tx:
        tx.repository.add(*(p.order for p in placed))
    async with orders.unit_of_work() as tx:
        found = await tx.repository.lock([placed[1].order.id, uuid.uuid4(), placed[0].order.id])
    assert found == {p.order.id: p.order for p in placed}


async def test_orders_save_writes_the_new_state(orders: Backend[Orders]) -> None:
    placed = new_order()
    async with orders.unit_of_work() as tx:
        tx.repository.add(placed.order)
    async with orders.unit_of_work() as tx:
        order = await tx.repository.get(placed.order.id, for_update=True)
        assert order is not None
        order.reserve_funds_confirmed(ExecutionMode.IMMEDIATE, NOW)
        tx.repository.save(order)
    async with orders.unit_of_work() as tx:
        stored = await tx.repository.get(placed.order.id)
    assert stored is not None and (stored.status, stored.reserved) == (MATCHED, True)


async def test_orders_save_of_an_order_no_longer_pending_fails_the_whole_unit(
    orders: Backend[Orders],
) -> None:
    """A change decided on a stale read (no lock) loses to the change that got there first."""
    placed, other = new_order(), new_order()
    async with orders.unit_of_work() as tx:
        tx.repository.add(placed.order)
    async with orders.unit_of_work() as tx:
        stale = await tx.repository.get(placed.order.id)
    async with orders.unit_of_work() as tx:
        order = await tx.repository.get(placed.order.id, for_update=True)
        assert order is not None
        tx.emit(*order.cancel("canceled by customer", NOW))
        tx.repository.save(order)
    before = await orders.published()

    assert stale is not None
    stale.reserved = True
    events = stale.match(NOW)
    with pytest.raises(WriteConflict):
        async with orders.unit_of_work() as tx:
            tx.repository.add(other.order)
            tx.repository.save(stale)
            tx.emit(*events)  # type: ignore[misc]

    async with orders.unit_of_work() as tx:
        stored = await tx.repository.get(placed.order.id)
        assert await tx.repository.get(other.order.id) is None
    assert stored is not None and stored.status is CANCELED
    assert await orders.published() == before


# --- accounts -----------------------------------------------------------------------------------------------


def created(customer: uuid.UUID, size: str = "2", price: str = "10") -> OrderCreated:
    return OrderCreated(
        order_id=uuid.uuid4(),
        customer_id=customer,
        occurred_at=NOW,
        asset_name="AAPL",
        side=Side.BUY,
        size=D(size),
        price=D(price),
    )


async def deposit(accounts: Backend[Accounts], customer: uuid.UUID, amount: str) -> None:
    async with accounts.unit_of_work() as tx:
        key = (customer, CASH)
        balances = await tx.repository.lock_balances([key], create=[key])
        tx.repository.store([domain.deposit(balances.get(key), customer, CASH, D(amount))])


async def test_accounts_effects_stored_are_read_back_in_the_next_book(accounts: Backend[Accounts]) -> None:
    customer = uuid.uuid4()
    await deposit(accounts, customer, "100")
    order = created(customer)
    async with accounts.unit_of_work() as tx:
        book, made = await tx.repository.load_book([order.order_id], [order])
        effect = book.answer(order, NOW)
        tx.repository.store([effect], made)
    async with accounts.unit_of_work() as tx:
        book, _ = await tx.repository.load_book([order.order_id], [order])
    cash = book.balances[(customer, CASH)]
    assert (cash.total_size, cash.usable_size) == (D(100), D(80))
    assert book.reservations[order.order_id].amount == D(20)
    assert book.tombstones == {}


async def test_accounts_balances_made_for_a_settlement_that_was_refused_are_not_kept(
    accounts: Backend[Accounts],
) -> None:
    customer = uuid.uuid4()
    await deposit(accounts, customer, "100")
    order = created(customer)
    terms = order.model_dump(include={"order_id", "customer_id", "occurred_at", "asset_name", "side", "size"})
    matched = OrderMatched(**terms, executed_price=order.price)
    async with accounts.unit_of_work() as tx:
        book, made = await tx.repository.load_book([order.order_id], [matched])
        assert [a.asset_name for a in made] == ["AAPL"]  # the settlement would pay into it
        effect = book.answer(matched, NOW)
        assert effect.refused is not None  # nothing was reserved for it
        tx.repository.store([], made)
    async with accounts.unit_of_work() as tx:
        found = await tx.repository.lock_balances([(customer, "AAPL"), (customer, CASH)])
    assert set(found) == {(customer, CASH)}


async def test_accounts_a_rejected_order_leaves_a_tombstone_and_no_hold(accounts: Backend[Accounts]) -> None:
    customer = uuid.uuid4()
    await deposit(accounts, customer, "10")
    order = created(customer)
    async with accounts.unit_of_work() as tx:
        book, made = await tx.repository.load_book([order.order_id], [order])
        effect = book.answer(order, NOW)
        tx.repository.store([effect], made)
        tx.emit(*effect.events)
    async with accounts.unit_of_work() as tx:
        book, _ = await tx.repository.load_book([order.order_id], [order])
    assert book.tombstones[order.order_id].reason.startswith("insufficient usable TRY")
    assert order.order_id not in book.reservations
    [answer] = [e for e in await accounts.published() if e.order_id == order.order_id]
    assert answer.type == "funds.rejected"


# --- deposit and withdrawal requests ------------------------------------------------------------------------


def stamp(by: uuid.UUID, second: int = 0) -> Stamp:
    return Stamp(by, NOW.replace(second=second))


async def test_accounts_deposit_request_is_read_back_and_its_approval_credits_once(
    accounts: Backend[Accounts],
) -> None:
    customer, admin = uuid.uuid4(), uuid.uuid4()
    async with accounts.unit_of_work() as tx:
        asked = await commands.ask_for_deposit(tx, customer, CASH, D("250.5"), stamp(customer))
    assert isinstance(asked, Deposit)
    async with accounts.unit_of_work() as tx:
        assert await tx.repository.lock_deposit(asked.id) == asked
        assert await tx.repository.lock_balances([(customer, CASH)]) == {}  # nothing credited yet
        stale = await tx.repository.lock_deposit(asked.id)
    async with accounts.unit_of_work() as tx:
        approved = await commands.decide_deposit(tx, asked.id, APPROVE, stamp(admin, 5))
    assert isinstance(approved, Step)
    async with accounts.unit_of_work() as tx:
        stored = await tx.repository.lock_deposit(asked.id)
        cash = (await tx.repository.lock_balances([(customer, CASH)]))[(customer, CASH)]
    assert stored == approved.request
    assert stored is not None and (stored.status, stored.decided) == (DepositStatus.APPROVED, stamp(admin, 5))
    assert (cash.total_size, cash.usable_size) == (D("250.5"), D("250.5"))

    assert stale is not None  # a decision taken on a stale read fails its whole unit: credited once
    with pytest.raises(WriteConflict):
        async with accounts.unit_of_work() as tx:
            again = approve_deposit(stale, cash, stamp(uuid.uuid4(), 6))
            assert isinstance(again, Step)
            tx.repository.decide_deposit(again.request)
            tx.repository.store([again.effect])
    async with accounts.unit_of_work() as tx:
        cash = (await tx.repository.lock_balances([(customer, CASH)]))[(customer, CASH)]
        assert await tx.repository.lock_deposit(asked.id) == approved.request
    assert cash.total_size == D("250.5")


async def test_accounts_requested_withdrawal_holds_then_pays_out_from_the_hold(
    accounts: Backend[Accounts],
) -> None:
    customer, admin = uuid.uuid4(), uuid.uuid4()
    await deposit(accounts, customer, "1000")
    async with accounts.unit_of_work() as tx:
        asked = await commands.withdraw(
            tx, customer, D(600), "TR330006100519786457841326", stamp(admin), threshold=D(500)
        )
    assert isinstance(asked, Step) and asked.request.status is WithdrawalStatus.REQUESTED
    async with accounts.unit_of_work() as tx:
        assert await tx.repository.lock_withdrawal(asked.request.id) == asked.request
        hold = await tx.repository.lock_hold(asked.request.id)
        cash = (await tx.repository.lock_balances([(customer, CASH)]))[(customer, CASH)]
    assert hold == asked.effect.reservation
    assert hold is not None and (hold.withdrawal_id, hold.order_id, hold.status) == (
        asked.request.id,
        None,
        HELD,
    )
    assert (cash.total_size, cash.usable_size) == (D(1000), D(400))

    async with accounts.unit_of_work() as tx:
        refused = await commands.decide_withdrawal(tx, asked.request.id, APPROVE, stamp(admin, 5))
    assert isinstance(refused, Refused) and refused.problem is Problem.FOUR_EYES
    async with accounts.unit_of_work() as tx:
        paid = await commands.decide_withdrawal(tx, asked.request.id, APPROVE, stamp(uuid.uuid4(), 6))
    assert isinstance(paid, Step)
    async with accounts.unit_of_work() as tx:
        stored = await tx.repository.lock_withdrawal(asked.request.id)
        hold = await tx.repository.lock_hold(asked.request.id)
        cash = (await tx.repository.lock_balances([(customer, CASH)]))[(customer, CASH)]
        missing = await tx.repository.lock_withdrawal(uuid.uuid4())
    assert stored is not None and stored.status is WithdrawalStatus.PAID
    assert hold is not None and hold.status is SETTLED
    assert (cash.total_size, cash.usable_size, missing) == (D(400), D(400), None)


async def test_accounts_rejected_deposit_request_creates_no_balance(accounts: Backend[Accounts]) -> None:
    customer = uuid.uuid4()
    async with accounts.unit_of_work() as tx:
        asked = await commands.ask_for_deposit(tx, customer, CASH, D(10), stamp(customer))
    assert isinstance(asked, Deposit)
    async with accounts.unit_of_work() as tx:
        rejected = await commands.decide_deposit(tx, asked.id, REJECT, stamp(uuid.uuid4(), 1))
        assert await commands.decide_deposit(tx, uuid.uuid4(), REJECT, stamp(uuid.uuid4(), 1)) is None
    assert isinstance(rejected, Step) and rejected.request.status is DepositStatus.REJECTED
    async with accounts.unit_of_work() as tx:
        assert await tx.repository.lock_balances([(customer, CASH)]) == {}
        assert await tx.repository.lock_deposit(asked.id) == rejected.request
