"""Both services' handlers, end to end, on in-memory units of work (no database, no broker): what one
publishes the other handles, delivered twice, as the consumers would receive it."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from oms.account import domain
from oms.account import handlers as account
from oms.kernel.events import Envelope, parse
from oms.kernel.market import Instrument, MarketBoard, Quote
from oms.kernel.money import CASH, OrderType, Side, TimeInForce
from oms.kernel.settings import ExecutionMode
from oms.kernel.unit_of_work import InMemoryState
from oms.order import handlers as order
from oms.order.domain import (
    CANCELED,
    EXPIRED,
    MATCHED,
    PENDING,
    Listing,
    Order,
    OrderPlaced,
    PlaceOrder,
    place_order,
)
from oms.order.execution import MarketExecution
from oms.order.expiry import expire_day_orders
from tests.fakes import AccountTables, OrderTable, accounts_in_memory, orders_in_memory

D = Decimal


@dataclass
class System:
    """The two services on fakes, and the events each has published but the other not yet handled."""

    mode: ExecutionMode = ExecutionMode.IMMEDIATE
    market: MarketBoard | None = None
    order_state: InMemoryState = field(default_factory=InMemoryState)
    account_state: InMemoryState = field(default_factory=InMemoryState)
    orders: OrderTable = field(default_factory=OrderTable)
    accounts: AccountTables = field(default_factory=AccountTables)

    def __post_init__(self) -> None:
        self.order_units: Any = orders_in_memory(self.order_state, self.orders)
        self.account_units: Any = accounts_in_memory(self.account_state, self.accounts)
        self.relayed = {"order": 0, "account": 0}
        self.execution: MarketExecution | None = None
        if self.market is not None:
            self.execution = MarketExecution(self.order_units, self.market, self._reserved_pending)
            self.market.listen(self.execution.quoted)

    async def _reserved_pending(self, _: datetime | None) -> list[Order]:
        return [copy.copy(o) for o in self.orders.orders.values() if o.status is PENDING and o.reserved]

    async def place(
        self, customer: uuid.UUID, side: Side, size: str, price: str | None, **terms: Any
    ) -> uuid.UUID:
        command = PlaceOrder(customer, "AAPL", side, D(size), D(price) if price else None, **terms)
        listing = None
        if self.market is not None:
            listing = Listing(self.market.instrument("AAPL"), self.market.quote("AAPL"), D("0.05"))
        placed = place_order(command, datetime.now(UTC), listing=listing)
        assert isinstance(placed, OrderPlaced), placed
        async with self.order_units() as tx:
            await order.place_orders(tx, [placed])
        return placed.order.id

    async def deposit(self, customer: uuid.UUID, asset: str, amount: str) -> None:
        async with self.account_units() as tx:
            key = (customer, asset)
            balances = await tx.repository.lock_balances([key], create=[key])
            tx.repository.store([domain.deposit(balances.get(key), customer, asset, D(amount))])

    async def settle_down(self, twice: bool = True) -> None:
        """Relay and handle until nothing new is published; every event is delivered `twice`."""
        while True:
            if created := self._take("order"):
                await account.handle_batch(self.account_units, self._delivered(created, twice))
            elif answers := self._take("account"):
                rested = self.execution.rest if self.execution else None
                delivered = self._delivered(answers, twice)
                await order.handle_batch(
                    self.order_units, self.mode, delivered, market=self.market, rested=rested
                )
            elif self.execution is not None and await self.execution.execute_queued():
                continue
            else:
                return

    def _take(self, service: str) -> list[Envelope[Any]]:
        state = self.order_state if service == "order" else self.account_state
        fresh = state.outbox[self.relayed[service] :]
        self.relayed[service] = len(state.outbox)
        return fresh

    @staticmethod
    def _delivered(envelopes: Sequence[Envelope[Any]], twice: bool) -> list[Envelope[Any]]:
        wire = [parse(e.to_json()) for e in envelopes]
        return wire + wire if twice else wire

    def balance(self, customer: uuid.UUID, asset: str) -> tuple[Decimal, Decimal]:
        found = self.accounts.balances.get((customer, asset))
        return (found.total_size, found.usable_size) if found else (D(0), D(0))


async def test_a_buy_is_reserved_matched_and_settled_once_however_often_its_events_arrive() -> None:
    system, alice = System(), uuid.uuid4()
    await system.deposit(alice, CASH, "100")
    order_id = await system.place(alice, Side.BUY, "3", "10.5")

    await system.settle_down()

    assert system.orders.orders[order_id].status is MATCHED
    assert system.balance(alice, CASH) == (D("68.5"), D("68.5"))
    assert system.balance(alice, "AAPL") == (D(3), D(3))
    kinds = [e.kind.value for e in system.accounts.ledger if e.order_id == order_id]
    assert kinds == ["RESERVE", "SETTLE_DEBIT", "SETTLE_CREDIT"]


async def test_an_order_without_funds_is_canceled_with_the_accounts_reason() -> None:
    system, bob = System(), uuid.uuid4()
    await system.deposit(bob, CASH, "5")
    order_id = await system.place(bob, Side.BUY, "1", "10")

    await system.settle_down()

    placed = system.orders.orders[order_id]
    assert (placed.status, placed.reason) == (CANCELED, "insufficient usable TRY: 10 needed, 5 usable")
    assert system.balance(bob, CASH) == (D(5), D(5))


async def test_a_cancel_in_manual_mode_releases_the_reservation() -> None:
    system, carol = System(mode=ExecutionMode.MANUAL), uuid.uuid4()
    await system.deposit(carol, CASH, "50")
    order_id = await system.place(carol, Side.BUY, "2", "10")
    await system.settle_down()
    assert system.balance(carol, CASH) == (D(50), D(30))

    await order.change_order(system.order_units, order_id, order.cancel("canceled by customer"))
    await system.settle_down()

    assert system.orders.orders[order_id].status is CANCELED
    assert system.balance(carol, CASH) == (D(50), D(50))


# --- `market` mode: the resting orders and the quotes -------------------------------------------------------

AAPL = Instrument(symbol="AAPL", name="Apple", tick_size=D("0.01"), lot_size=D(1), reference_price=D(10))


def quote(bid: str, ask: str, sequence: int) -> Quote:
    return Quote(
        symbol="AAPL", bid=D(bid), ask=D(ask), last=D(bid), time=datetime.now(UTC), sequence=sequence
    )


async def market_system() -> System:
    board = MarketBoard()
    board.list_instrument(AAPL)
    await board.publish(quote("9.99", "10.01", 1))
    return System(mode=ExecutionMode.MARKET, market=board)


async def test_market_resting_buy_executed_once_by_the_quote_that_crosses_it() -> None:
    system, dan = await market_system(), uuid.uuid4()
    assert system.market is not None and system.execution is not None
    await system.deposit(dan, CASH, "100")
    order_id = await system.place(dan, Side.BUY, "3", "10")
    await system.settle_down()
    assert order_id in system.execution.book
    assert system.balance(dan, CASH) == (D(100), D(70))

    await system.market.publish(quote("9.95", "9.98", 2))
    await system.market.publish(quote("9.90", "9.93", 3))  # crosses it again: it is off the book
    await system.settle_down()

    assert (system.orders.orders[order_id].status, system.orders.orders[order_id].executed_price) == (
        MATCHED,
        D("9.98"),
    )
    assert system.balance(dan, CASH) == (D("70.06"), D("70.06"))
    assert system.balance(dan, "AAPL") == (D(3), D(3))
    assert len(system.execution.book) == 0


async def test_market_a_restarted_service_finds_its_resting_orders_and_the_latest_quote() -> None:
    system, erin = await market_system(), uuid.uuid4()
    assert system.market is not None
    await system.deposit(erin, CASH, "100")
    order_id = await system.place(erin, Side.BUY, "3", "10")
    await system.settle_down()
    await system.market.publish(quote("9.95", "9.98", 2))  # no one listens: the service is "down"
    restarted = MarketBoard()
    restarted.list_instrument(AAPL)
    await restarted.publish(quote("9.95", "9.98", 2))
    again = System(mode=ExecutionMode.MARKET, market=restarted, orders=system.orders)  # the same database
    assert again.execution is not None

    await again.execution.resync()
    await again.execution.execute_queued()

    assert system.orders.orders[order_id].executed_price == D("9.98")


async def test_market_day_orders_placed_before_the_close_expire() -> None:
    system, fay = await market_system(), uuid.uuid4()
    await system.deposit(fay, CASH, "100")
    day = await system.place(fay, Side.BUY, "3", "10", time_in_force=TimeInForce.DAY)
    gtc = await system.place(fay, Side.BUY, "3", "10")
    await system.settle_down()
    placed = system.orders.orders[day].created_at

    assert (
        await expire_day_orders(system.order_units, placed, datetime.now(UTC)) == 0
    )  # placed at it: not before
    assert await expire_day_orders(system.order_units, placed + timedelta(seconds=1), datetime.now(UTC)) == 1
    await system.settle_down()

    assert (system.orders.orders[day].status, system.orders.orders[day].reason) == (CANCELED, EXPIRED)
    assert system.orders.orders[gtc].status is PENDING
    assert system.balance(fay, CASH) == (D(100), D(70))


async def test_market_buy_at_the_collar_with_the_rest_released() -> None:
    system, gus = await market_system(), uuid.uuid4()
    await system.deposit(gus, CASH, "100")
    order_id = await system.place(gus, Side.BUY, "3", None, order_type=OrderType.MARKET)  # 3 × 10.52 held
    await system.settle_down()
    assert system.orders.orders[order_id].executed_price == D("10.01")
    assert system.balance(gus, CASH) == (D("69.97"), D("69.97"))
