"""Both services' handlers, end to end, on in-memory units of work (no database, no broker): what one
publishes the other handles, delivered twice, as the consumers would receive it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from oms.account import domain
from oms.account import handlers as account
from oms.kernel.events import Envelope, parse
from oms.kernel.money import CASH, Side
from oms.kernel.settings import ExecutionMode
from oms.kernel.unit_of_work import InMemoryState
from oms.order import handlers as order
from oms.order.domain import CANCELED, MATCHED, OrderPlaced, PlaceOrder, place_order
from tests.fakes import AccountTables, OrderTable, accounts_in_memory, orders_in_memory

D = Decimal


@dataclass
class System:
    """The two services on fakes, and the events each has published but the other not yet handled."""

    mode: ExecutionMode = ExecutionMode.IMMEDIATE
    order_state: InMemoryState = field(default_factory=InMemoryState)
    account_state: InMemoryState = field(default_factory=InMemoryState)
    orders: OrderTable = field(default_factory=OrderTable)
    accounts: AccountTables = field(default_factory=AccountTables)

    def __post_init__(self) -> None:
        self.order_units: Any = orders_in_memory(self.order_state, self.orders)
        self.account_units: Any = accounts_in_memory(self.account_state, self.accounts)
        self.relayed = {"order": 0, "account": 0}

    async def place(self, customer: uuid.UUID, side: Side, size: str, price: str) -> uuid.UUID:
        placed = place_order(PlaceOrder(customer, "AAPL", side, D(size), D(price)), datetime.now(UTC))
        assert isinstance(placed, OrderPlaced)
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
                await order.handle_batch(self.order_units, self.mode, self._delivered(answers, twice))
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
