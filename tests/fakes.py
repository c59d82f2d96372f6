"""In-memory repositories of the order and account services, for handler tests without I/O. They keep the
contract of `oms.order.store.Orders` and `oms.account.store.Accounts` (tests/integration/test_contract.py runs
the same tests against both): reads see what is committed, writes are staged and applied when the unit of work
ends without an error."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from oms.account.domain import (
    Asset,
    BalanceKey,
    Book,
    Effect,
    LedgerEntry,
    Reservation,
    Tombstone,
    balances_needed,
)
from oms.account.requests import Deposit, Withdrawal
from oms.kernel.events import Event
from oms.kernel.money import TimeInForce
from oms.kernel.sql import WriteConflict
from oms.kernel.unit_of_work import Change, InMemoryState, UnitOfWorkFactory, in_memory_unit_of_work
from oms.order.domain import PENDING, Order

Stage = Callable[[Change], None]


@dataclass
class OrderTable:
    orders: dict[uuid.UUID, Order] = field(default_factory=dict)


class FakeOrders:
    """`Orders` over an `OrderTable`."""

    def __init__(self, table: OrderTable, stage: Stage) -> None:
        self._table = table
        self._stage = stage

    async def get(self, order_id: uuid.UUID, *, for_update: bool = False) -> Order | None:
        order = self._table.orders.get(order_id)
        return copy.copy(order) if order else None

    async def lock(self, order_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Order]:
        return {i: copy.copy(o) for i in sorted(set(order_ids)) if (o := self._table.orders.get(i))}

    async def lock_day_orders(self, placed_before: datetime, limit: int) -> list[Order]:
        found = [
            copy.copy(o)
            for o in self._table.orders.values()
            if o.status is PENDING and o.time_in_force is TimeInForce.DAY and o.created_at < placed_before
        ]
        return sorted(found, key=lambda o: o.id)[:limit]

    def add(self, *orders: Order) -> None:
        added = [copy.copy(o) for o in orders]

        def check() -> None:
            if any(o.id in self._table.orders for o in added):
                raise WriteConflict("an order with this id exists")

        self._stage(Change(apply=lambda: self._table.orders.update({o.id: o for o in added}), check=check))

    def save(self, *orders: Order) -> None:
        saved = [copy.copy(o) for o in orders]

        def check() -> None:
            stored = [self._table.orders.get(o.id) for o in saved]
            if any(s is None or s.status is not PENDING for s in stored):
                raise WriteConflict("of these orders, some are no longer PENDING")

        self._stage(Change(apply=lambda: self._table.orders.update({o.id: o for o in saved}), check=check))


@dataclass
class AccountTables:
    balances: dict[BalanceKey, Asset] = field(default_factory=dict)
    reservations: dict[uuid.UUID, Reservation] = field(default_factory=dict)  # by reservation id
    tombstones: dict[uuid.UUID, Tombstone] = field(default_factory=dict)
    ledger: list[LedgerEntry] = field(default_factory=list)
    deposits: dict[uuid.UUID, Deposit] = field(default_factory=dict)
    withdrawals: dict[uuid.UUID, Withdrawal] = field(default_factory=dict)


class FakeAccounts:
    """`Accounts` over `AccountTables`."""

    def __init__(self, tables: AccountTables, stage: Stage) -> None:
        self._tables = tables
        self._stage = stage

    async def load_book(
        self, order_ids: Iterable[uuid.UUID], events: Iterable[Event]
    ) -> tuple[Book, list[Asset]]:
        ids = set(order_ids)
        reservations = {r.order_id: r for r in self._tables.reservations.values() if r.order_id in ids}
        tombstones = {i: t for i, t in self._tables.tombstones.items() if i in ids}
        needed = balances_needed(events, reservations)  # type: ignore[arg-type]
        balances = await self.lock_balances(needed.held, create=needed.received)
        created = [balances[key] for key in needed.received if key in balances]
        return Book(balances, reservations, tombstones), created  # type: ignore[arg-type]

    async def lock_orders(self, order_ids: Sequence[uuid.UUID]) -> None:
        """Nothing to lock: one unit at a time."""

    async def lock_balances(
        self, keys: Iterable[BalanceKey], *, create: Iterable[BalanceKey] = ()
    ) -> dict[BalanceKey, Asset]:
        found = {key: a for key in keys if (a := self._tables.balances.get(key))}
        for customer, name in create:
            found.setdefault(
                (customer, name),
                self._tables.balances.get((customer, name))
                or Asset(uuid.uuid4(), customer, name, Decimal(0), Decimal(0)),
            )
        return found

    def store(self, effects: Sequence[Effect], created: Iterable[Asset] = ()) -> None:
        self._stage(Change(apply=lambda: self._put(effects)))

    async def lock_deposit(self, deposit_id: uuid.UUID) -> Deposit | None:
        return self._tables.deposits.get(deposit_id)

    def add_deposit(self, deposit: Deposit) -> None:
        self._stage(_adding(self._tables.deposits, deposit))

    def decide_deposit(self, deposit: Deposit) -> None:
        self._stage(_deciding(self._tables.deposits, deposit))

    async def lock_withdrawal(self, withdrawal_id: uuid.UUID) -> Withdrawal | None:
        return self._tables.withdrawals.get(withdrawal_id)

    async def lock_hold(self, withdrawal_id: uuid.UUID) -> Reservation | None:
        return next((r for r in self._tables.reservations.values() if r.withdrawal_id == withdrawal_id), None)

    def add_withdrawal(self, withdrawal: Withdrawal) -> None:
        self._stage(_adding(self._tables.withdrawals, withdrawal))

    def decide_withdrawal(self, withdrawal: Withdrawal) -> None:
        self._stage(_deciding(self._tables.withdrawals, withdrawal))

    def _put(self, effects: Sequence[Effect]) -> None:
        for effect in effects:
            for asset in effect.assets:
                self._tables.balances[(asset.customer_id, asset.asset_name)] = asset
            if effect.reservation is not None:
                self._tables.reservations[effect.reservation.id] = effect.reservation
            if effect.tombstone is not None:
                self._tables.tombstones.setdefault(effect.tombstone.order_id, effect.tombstone)
            self._tables.ledger.extend(effect.entries)


Request = TypeVar("Request", Deposit, Withdrawal)


def _adding(table: dict[uuid.UUID, Request], request: Request) -> Change:
    def check() -> None:
        if request.id in table:
            raise WriteConflict(f"a request with id {request.id} exists")

    return Change(apply=lambda: table.__setitem__(request.id, request), check=check)


def _deciding(table: dict[uuid.UUID, Request], request: Request) -> Change:
    """Like the database's update: only of a request still REQUESTED."""

    def check() -> None:
        stored = table.get(request.id)
        if stored is None or stored.status != "REQUESTED":
            raise WriteConflict(f"request {request.id} is no longer REQUESTED")

    return Change(apply=lambda: table.__setitem__(request.id, request), check=check)


def orders_in_memory(state: InMemoryState, table: OrderTable) -> UnitOfWorkFactory[FakeOrders]:
    return in_memory_unit_of_work(state, lambda stage: FakeOrders(table, stage))


def accounts_in_memory(state: InMemoryState, tables: AccountTables) -> UnitOfWorkFactory[FakeAccounts]:
    return in_memory_unit_of_work(state, lambda stage: FakeAccounts(tables, stage))
