"""Balances, reservations and the ledger: every movement of money or assets, as pure functions.

Each function takes the current state (loaded and locked by the handler) and returns an `Effect`: the new
balances, the reservation or tombstone to store, the ledger entries and the events to write, all in one
transaction, or a `Refused` saying why nothing happens. Nothing here does I/O or raises for a client's
mistake; a `ValueError` means the caller broke a rule of this module (a bug).

Invariants, per customer and asset, after every effect:
- 0 <= usable_size <= total_size, and total_size - usable_size = sum of HELD reservations;
- each balance equals the sum of its ledger entries; every entry kind has one shape:
  DEPOSIT (+a, +a), WITHDRAWAL (-a, -a), RESERVE (0, -a), RELEASE (0, +a), SETTLE_DEBIT (-a, 0),
  SETTLE_CREDIT (+a, +a), PAYOUT (-a, 0) as (delta_total, delta_usable);
- money is made unusable only by a reservation, and each one belongs to an order or to a withdrawal waiting
  for an admin's approval (`oms.account.requests`): a deposit is always usable in full.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Final

from oms.kernel.events import Event, FundsRejected, FundsReserved, OrderCanceled, OrderCreated, OrderMatched
from oms.kernel.money import CASH, EXACT, MAX_SCALE, Side, add, cost, plain, sub, symbol_problem

NOT_RESERVED_BEFORE_CANCEL: Final = "order canceled before its funds were reserved"


class ReservationStatus(StrEnum):
    HELD = "HELD"
    RELEASED = "RELEASED"
    SETTLED = "SETTLED"


class EntryKind(StrEnum):
    DEPOSIT = "DEPOSIT"
    WITHDRAWAL = "WITHDRAWAL"
    RESERVE = "RESERVE"
    RELEASE = "RELEASE"
    SETTLE_DEBIT = "SETTLE_DEBIT"
    SETTLE_CREDIT = "SETTLE_CREDIT"
    PAYOUT = "PAYOUT"  # a held withdrawal paid out


class Problem(StrEnum):
    INVALID = "invalid"  # bad input: 422
    INSUFFICIENT = "insufficient"  # not enough usable balance: 409
    INCONSISTENT = "inconsistent"  # an event contradicts the stored state: alert, dead-letter
    DECIDED = "decided"  # a request that is no longer REQUESTED: 409
    FOUR_EYES = "four eyes"  # a request approved by the one who asked: 403


MAX_DEPOSIT: Final = Decimal(10) ** 15  # the largest single deposit, in units of the asset
_SMALLEST: Final = Decimal(1).scaleb(-MAX_SCALE)


HELD, RELEASED, SETTLED = ReservationStatus.HELD, ReservationStatus.RELEASED, ReservationStatus.SETTLED


@dataclass(frozen=True)
class Asset:
    """One customer's balance of one asset: `locked` (total - usable) is what HELD reservations hold."""

    id: uuid.UUID
    customer_id: uuid.UUID
    asset_name: str
    total_size: Decimal
    usable_size: Decimal

    def __post_init__(self) -> None:
        if not Decimal(0) <= self.usable_size <= self.total_size:
            raise ValueError(f"balance out of bounds: usable {self.usable_size}, total {self.total_size}")

    @property
    def locked_size(self) -> Decimal:
        """What HELD reservations hold: total - usable."""
        return sub(self.total_size, self.usable_size)

    def moved(self, delta_total: Decimal, delta_usable: Decimal) -> Asset:
        """This balance after a movement (raises if it would leave the bounds)."""
        return replace(
            self,
            total_size=add(self.total_size, delta_total),
            usable_size=add(self.usable_size, delta_usable),
        )


@dataclass(frozen=True)
class Reservation:
    """Funds set aside for an order (`order_id`), or for a withdrawal waiting for approval
    (`withdrawal_id`)."""

    id: uuid.UUID
    order_id: uuid.UUID | None
    customer_id: uuid.UUID
    asset_name: str
    amount: Decimal
    status: ReservationStatus = HELD
    withdrawal_id: uuid.UUID | None = None

    @property
    def reference(self) -> str:
        """What its ledger entries name: the withdrawal it holds for, else the reservation itself."""
        return str(self.withdrawal_id or self.id)


@dataclass(frozen=True)
class Tombstone:
    """An order the account decided never to reserve for: canceled before order.created arrived, or
    rejected. A later order.created for it is answered with funds.rejected again, never reserved."""

    order_id: uuid.UUID
    customer_id: uuid.UUID
    reason: str


@dataclass(frozen=True)
class LedgerEntry:
    kind: EntryKind
    customer_id: uuid.UUID
    asset_name: str
    delta_total: Decimal
    delta_usable: Decimal
    order_id: uuid.UUID | None = None
    reference: str | None = None  # the reservation id, or the deposit or withdrawal (request) it moves


@dataclass(frozen=True)
class OrderTerms:
    """What the account needs of an order: from order.created what to reserve, from order.matched what its
    execution moves. `price` is TRY per unit: what a BUY reserves (its limit, or a MARKET BUY's ask plus the
    collar), or what the order executed at; None only for a MARKET SELL's creation (it reserves the asset)."""

    order_id: uuid.UUID
    customer_id: uuid.UUID
    asset_name: str
    side: Side
    size: Decimal
    price: Decimal | None

    @property
    def reserved_asset(self) -> str:
        """A BUY pays in TRY; a SELL delivers the asset itself."""
        return CASH if self.side is Side.BUY else self.asset_name

    @property
    def reserved_amount(self) -> Decimal:
        """size * price TRY for a BUY, exactly; size of the asset for a SELL."""
        return self.cost if self.side is Side.BUY else self.size

    @property
    def cost(self) -> Decimal:
        """size * price, exactly."""
        if self.price is None:
            raise ValueError(f"order {self.order_id} has no price to pay or be paid")
        return cost(self.size, self.price)

    @property
    def received_asset(self) -> str:
        """A BUY receives the asset; a SELL is paid in TRY."""
        return self.asset_name if self.side is Side.BUY else CASH

    def moves(self) -> tuple[tuple[str, Decimal], tuple[str, Decimal]]:
        """What executing the order at `price` moves of its customer's totals, by asset: a BUY pays size *
        price TRY and gets size of the asset; a SELL the reverse."""
        paid = self.cost if self.side is Side.BUY else self.size
        received = self.size if self.side is Side.BUY else self.cost
        return (self.reserved_asset, EXACT.minus(paid)), (self.received_asset, received)


def terms_of(event: OrderCreated | OrderMatched) -> OrderTerms:
    """The order's terms as order.created (what to reserve) or order.matched (the execution) state them."""
    if isinstance(event, OrderMatched):
        price: Decimal | None = event.executed_price
    else:
        price = event.buy_price if event.side is Side.BUY else event.price
    return OrderTerms(event.order_id, event.customer_id, event.asset_name, event.side, event.size, price)


AccountEvent = FundsReserved | FundsRejected


@dataclass(frozen=True)
class Refused:
    problem: Problem
    message: str


@dataclass(frozen=True)
class Effect:
    """What to store and publish in one transaction. Empty means: nothing to do (e.g. a duplicate)."""

    assets: tuple[Asset, ...] = ()  # new balances, to insert or update by id
    reservation: Reservation | None = None  # to insert or update by id
    tombstone: Tombstone | None = None  # to insert
    entries: tuple[LedgerEntry, ...] = ()  # to append
    events: tuple[AccountEvent, ...] = ()  # to the outbox
    refused: Refused | None = None

    @property
    def changed(self) -> bool:
        """True when there is anything to store."""
        return bool(self.assets or self.reservation or self.tombstone or self.entries)


NOTHING: Final = Effect()


def deposit(
    asset: Asset | None,
    customer_id: uuid.UUID,
    asset_name: str,
    amount: Decimal,
    *,
    reference: str | None = None,
) -> Effect:
    """Add `amount` to a balance (created if missing), total and usable alike."""
    problem = deposit_problem(asset_name, amount)
    if problem:
        return _refused(Problem.INVALID, problem)
    current = _balance(asset, customer_id, asset_name)
    entry = ledger_entry(EntryKind.DEPOSIT, current, amount, reference=reference)
    return Effect(assets=(posted(current, [entry]),), entries=(entry,))


def withdraw(cash: Asset | None, amount: Decimal, *, reference: str | None = None) -> Effect:
    """Take `amount` TRY out of the usable cash balance; refused when it is short."""
    refused = cash_shortfall(cash, amount)
    if refused is not None:
        return refused
    assert cash is not None  # a missing balance is refused as short
    entry = ledger_entry(EntryKind.WITHDRAWAL, cash, amount, reference=reference)
    return Effect(assets=(posted(cash, [entry]),), entries=(entry,))


def cash_shortfall(cash: Asset | None, amount: Decimal) -> Effect | None:
    """The refusal of taking `amount` out of usable TRY (not positive, or more than is usable), or None."""
    if not amount.is_finite() or amount <= 0:
        return _refused(Problem.INVALID, "amount must be greater than 0")
    usable = cash.usable_size if cash else Decimal(0)
    if cash is None or usable < amount:
        return _refused(
            Problem.INSUFFICIENT,
            f"insufficient usable {CASH}: {plain(usable)} usable, {plain(amount)} requested",
        )
    if cash.asset_name != CASH:
        raise ValueError(f"withdrawals are paid from {CASH}, not {cash.asset_name}")
    return None


def reserve_funds(
    order: OrderTerms,
    balances: Mapping[str, Asset],
    *,
    reservation: Reservation | None = None,
    tombstone: Tombstone | None = None,
    now: datetime,
) -> Effect:
    """Answer order.created: hold size * price TRY (BUY) or size of the asset (SELL), or reject it.

    `balances` are the customer's, by asset name (at least the one to reserve); `reservation` and
    `tombstone` are what is already stored for this order, which makes a repeated call harmless."""
    if tombstone is not None:
        # Canceled before it got here, or rejected before: rejected (again), never reserved.
        return Effect(events=(_rejection(order, tombstone.reason, now),))
    if reservation is not None:
        return NOTHING  # already reserved; funds.reserved went out with the reservation
    asset = balances.get(order.reserved_asset)
    problem = _order_problem(order, asset)
    if problem or asset is None:
        return _reject(order, problem or "no balance", now)
    asset = _balance(asset, order.customer_id, order.reserved_asset)
    held = Reservation(
        uuid.uuid4(), order.order_id, order.customer_id, asset.asset_name, order.reserved_amount
    )
    entry = ledger_entry(
        EntryKind.RESERVE, asset, held.amount, order_id=order.order_id, reference=str(held.id)
    )
    event = FundsReserved(
        order_id=order.order_id,
        customer_id=order.customer_id,
        occurred_at=now,
        reservation_id=held.id,
        asset_name=held.asset_name,
        amount=held.amount,
    )
    return Effect(assets=(posted(asset, [entry]),), reservation=held, entries=(entry,), events=(event,))


def release_reservation(reservation: Reservation, asset: Asset | None) -> Effect:
    """HELD -> RELEASED: the amount becomes usable again. Releasing twice changes nothing."""
    if reservation.status is RELEASED:
        return NOTHING
    if reservation.status is SETTLED:
        return _refused(Problem.INCONSISTENT, f"reservation {reservation.id} is already SETTLED")
    asset = held_balance(reservation, asset)
    entry = ledger_entry(
        EntryKind.RELEASE, asset, reservation.amount, reservation.order_id, reservation.reference
    )
    return Effect(
        assets=(posted(asset, [entry]),),
        reservation=replace(reservation, status=RELEASED),
        entries=(entry,),
    )


def release_canceled_order(
    order_id: uuid.UUID,
    customer_id: uuid.UUID,
    *,
    reservation: Reservation | None,
    tombstone: Tombstone | None,
    asset: Asset | None,
) -> Effect:
    """Answer order.canceled (also sent again as a release request): release the held reservation, or, if
    none was made yet, leave a tombstone so that a late order.created is rejected instead of reserved."""
    if reservation is not None:
        return release_reservation(reservation, asset)
    if tombstone is not None:
        return NOTHING
    return Effect(tombstone=Tombstone(order_id, customer_id, NOT_RESERVED_BEFORE_CANCEL))


def settle(reservation: Reservation | None, order: OrderTerms, balances: Mapping[str, Asset]) -> Effect:
    """Answer order.matched: pay what the execution cost out of the reservation, release the rest, and credit
    what was bought or the sale's proceeds.

    BUY: TRY total -= size * executed price, the rest of the reservation back to usable (price improvement);
    asset total and usable += size (asset created if missing). SELL: asset total -= size; TRY total and usable
    += size * executed price. HELD -> SETTLED; settling twice changes nothing. `balances` are the customer's,
    by asset name (at least the two involved)."""
    if reservation is None:
        return _refused(Problem.INCONSISTENT, f"order {order.order_id} was matched but nothing is reserved")
    if reservation.status is SETTLED:
        return NOTHING
    problem = _settlement_problem(reservation, order)
    if problem:
        return _refused(Problem.INCONSISTENT, problem)
    paid = held_balance(reservation, balances.get(reservation.asset_name))
    received = _balance(balances.get(order.received_asset), order.customer_id, order.received_asset)
    spent = order.reserved_amount  # at the executed price: at most what was reserved
    proceeds = order.size if order.side is Side.BUY else order.cost
    link = (order.order_id, str(reservation.id))
    entries = [ledger_entry(EntryKind.SETTLE_DEBIT, paid, spent, *link)]
    unused = sub(reservation.amount, spent)
    if unused > 0:  # a BUY executed below what it reserved: the difference is the customer's again
        entries.append(ledger_entry(EntryKind.RELEASE, paid, unused, *link))
    credit = ledger_entry(EntryKind.SETTLE_CREDIT, received, proceeds, *link)
    return Effect(
        assets=(posted(paid, entries), posted(received, [credit])),
        reservation=replace(reservation, status=SETTLED),
        entries=(*entries, credit),
    )


# --- A batch of events ------------------------------------------------------------------------------------

BalanceKey = tuple[uuid.UUID, str]  # (customer id, asset name)


@dataclass
class Book:
    """The part of the accounts a batch of events touches, as loaded (and locked) for it: balances by
    (customer, asset), and reservations and tombstones by order. `answer` decides each event with the
    functions above and, unless refused, takes the effect in here too, so that the next event sees it."""

    balances: dict[BalanceKey, Asset] = field(default_factory=dict)
    reservations: dict[uuid.UUID, Reservation] = field(default_factory=dict)
    tombstones: dict[uuid.UUID, Tombstone] = field(default_factory=dict)

    def answer(self, event: Event, now: datetime) -> Effect:
        """The account's effect of an order service event: reserve on order.created, release on
        order.canceled, settle on order.matched; nothing for anything else."""
        match event:
            case OrderCreated():
                return self._take(self._reserve(terms_of(event), now))
            case OrderCanceled():
                return self._take(self._release(event.order_id, event.customer_id))
            case OrderMatched():
                terms = terms_of(event)
                balances = self._of(terms.customer_id, terms.reserved_asset, terms.received_asset)
                return self._take(settle(self.reservations.get(terms.order_id), terms, balances))
        return NOTHING

    def _reserve(self, order: OrderTerms, now: datetime) -> Effect:
        return reserve_funds(
            order,
            self._of(order.customer_id, order.reserved_asset),
            reservation=self.reservations.get(order.order_id),
            tombstone=self.tombstones.get(order.order_id),
            now=now,
        )

    def _release(self, order_id: uuid.UUID, customer_id: uuid.UUID) -> Effect:
        reservation = self.reservations.get(order_id)
        return release_canceled_order(
            order_id,
            customer_id,
            reservation=reservation,
            tombstone=self.tombstones.get(order_id),
            asset=self.balances.get((customer_id, reservation.asset_name)) if reservation else None,
        )

    def _of(self, customer_id: uuid.UUID, *names: str) -> dict[str, Asset]:
        return {n: a for n in names if (a := self.balances.get((customer_id, n))) is not None}

    def _take(self, effect: Effect) -> Effect:
        if effect.refused is None:
            for asset in effect.assets:
                self.balances[(asset.customer_id, asset.asset_name)] = asset
            if effect.reservation is not None and effect.reservation.order_id is not None:
                self.reservations[effect.reservation.order_id] = effect.reservation
            if effect.tombstone is not None:
                self.tombstones[effect.tombstone.order_id] = effect.tombstone
        return effect


@dataclass(frozen=True)
class BalancesNeeded:
    """The balances a batch of events reads (`held`), and those its settlements pay into (`received`:
    created at zero if missing)."""

    held: frozenset[BalanceKey]
    received: frozenset[BalanceKey]


def balances_needed(events: Iterable[Event], reservations: Mapping[uuid.UUID, Reservation]) -> BalancesNeeded:
    """What `Book.answer` will read of the balances for `events`, given the orders' reservations."""
    held: set[BalanceKey] = set()
    received: set[BalanceKey] = set()
    for event in events:
        if isinstance(event, OrderCreated | OrderMatched):
            terms = terms_of(event)
            held.add((terms.customer_id, terms.reserved_asset))
            if isinstance(event, OrderMatched):
                received.add((terms.customer_id, terms.received_asset))
        elif isinstance(event, OrderCanceled) and (reservation := reservations.get(event.order_id)):
            held.add((reservation.customer_id, reservation.asset_name))
    return BalancesNeeded(frozenset(held), frozenset(received))


# --- Helpers -----------------------------------------------------------------------------------------------

_SIGNS: Final = {
    EntryKind.DEPOSIT: (1, 1),
    EntryKind.WITHDRAWAL: (-1, -1),
    EntryKind.RESERVE: (0, -1),
    EntryKind.RELEASE: (0, 1),
    EntryKind.SETTLE_DEBIT: (-1, 0),
    EntryKind.SETTLE_CREDIT: (1, 1),
    EntryKind.PAYOUT: (-1, 0),
}


def ledger_entry(
    kind: EntryKind,
    asset: Asset,
    amount: Decimal,
    order_id: uuid.UUID | None = None,
    reference: str | None = None,
) -> LedgerEntry:
    """The entry of `kind` moving `amount` of `asset`, signed as its kind always is."""
    total_sign, usable_sign = _SIGNS[kind]
    return LedgerEntry(
        kind,
        asset.customer_id,
        asset.asset_name,
        EXACT.multiply(Decimal(total_sign), amount),
        EXACT.multiply(Decimal(usable_sign), amount),
        order_id,
        reference,
    )


def posted(asset: Asset, entries: list[LedgerEntry]) -> Asset:
    """The balance after its entries: balances move only through ledger entries."""
    for entry in entries:
        asset = asset.moved(entry.delta_total, entry.delta_usable)
    return asset


def _refused(problem: Problem, message: str) -> Effect:
    return Effect(refused=Refused(problem, message))


def _reject(order: OrderTerms, reason: str, now: datetime) -> Effect:
    return Effect(
        tombstone=Tombstone(order.order_id, order.customer_id, reason),
        events=(_rejection(order, reason, now),),
    )


def _rejection(order: OrderTerms, reason: str, now: datetime) -> FundsRejected:
    return FundsRejected(
        order_id=order.order_id, customer_id=order.customer_id, occurred_at=now, reason=reason
    )


def _balance(asset: Asset | None, customer_id: uuid.UUID, asset_name: str) -> Asset:
    if asset is None:
        return Asset(uuid.uuid4(), customer_id, asset_name, Decimal(0), Decimal(0))
    if (asset.customer_id, asset.asset_name) != (customer_id, asset_name):
        raise ValueError(f"balance of {asset.asset_name} for {asset.customer_id} given for {asset_name}")
    return asset


def held_balance(reservation: Reservation, asset: Asset | None) -> Asset:
    """The balance `reservation` holds part of (a HELD reservation's balance exists; raises otherwise)."""
    if asset is None:
        raise ValueError(f"no {reservation.asset_name} balance for reservation {reservation.id}")
    return _balance(asset, reservation.customer_id, reservation.asset_name)


def deposit_problem(asset_name: str, amount: Decimal) -> str | None:
    """Why `amount` of `asset_name` cannot be deposited, or None: more than 0 (so not -0), at most
    `MAX_SCALE` decimal places and `MAX_DEPOSIT`."""
    if not amount.is_finite() or amount <= 0:
        return "amount must be greater than 0"
    if amount > MAX_DEPOSIT:
        return f"amount must be at most {plain(MAX_DEPOSIT)}"
    if amount != amount.quantize(_SMALLEST):
        return f"amount must have at most {MAX_SCALE} decimal places"
    return symbol_problem(asset_name)


def _order_problem(order: OrderTerms, asset: Asset | None) -> str | None:
    if order.asset_name == CASH or symbol_problem(order.asset_name):
        return f"{order.asset_name} cannot be traded"
    if not order.size > 0 or (order.price is not None and not order.price > 0):
        return "size and price must be greater than 0"
    if order.side is Side.BUY and order.price is None:
        return "a BUY must say what it reserves"
    needed, name = order.reserved_amount, order.reserved_asset
    if asset is None:
        return f"no {name} held: {plain(needed)} {name} needed"
    if asset.usable_size < needed:
        return f"insufficient usable {name}: {plain(needed)} needed, {plain(asset.usable_size)} usable"
    return None


def _settlement_problem(reservation: Reservation, order: OrderTerms) -> str | None:
    if reservation.status is RELEASED:
        return f"order {order.order_id} was matched but its reservation was released"
    expected = (order.order_id, order.customer_id, order.reserved_asset)
    actual = (reservation.order_id, reservation.customer_id, reservation.asset_name)
    if actual != expected:
        return f"order {order.order_id} was matched on terms its reservation does not hold: {actual}"
    if order.price is None or not order.price > 0:
        return f"order {order.order_id} was matched without an executed price"
    if order.side is Side.SELL and reservation.amount != order.size:
        return f"order {order.order_id} sold {plain(order.size)} but {plain(reservation.amount)} are reserved"
    if order.side is Side.BUY and reservation.amount < order.cost:
        return (
            f"order {order.order_id} cost {plain(order.cost)} {CASH} at its executed price, more than its"
            f" reservation of {plain(reservation.amount)}"
        )
    return None
