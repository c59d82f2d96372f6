"""Order lifecycle rules: PENDING -> MATCHED | CANCELED, decided here and nowhere else.

An `Order` is changed only through its methods. Each returns the events to write to the outbox in the same
transaction, or a `TransitionRefused` when a command (match, cancel) asks for a move the table forbids.
Events from the account service (funds reserved or rejected) are facts: they are never refused, but a late
or duplicated one may change nothing, or ask the account to undo what it did (see `reserve_funds_confirmed`).

Execution (SPEC §3b): a reserved order executes whole, once, at the market's price when a quote crosses it
(a BUY at the ask, a SELL at the bid: `meet`), at its limit in `immediate` mode, or by an admin's match at
the quote (`match_at`). Orders are placed only for listed, open instruments, at prices on the tick grid and
inside the band, in whole lots (`place_order` with the symbol's `Listing`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Final

from oms.kernel.events import OrderCanceled, OrderCreated, OrderMatched
from oms.kernel.market import Instrument, Quote, collared_price
from oms.kernel.money import CASH, OrderType, Side, TimeInForce, cost, plain, symbol_problem
from oms.kernel.settings import ExecutionMode


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    MATCHED = "MATCHED"
    CANCELED = "CANCELED"


PENDING, MATCHED, CANCELED = OrderStatus.PENDING, OrderStatus.MATCHED, OrderStatus.CANCELED
TERMINAL: Final = frozenset({MATCHED, CANCELED})

# Every status change an order may make; any other is refused. MATCHED and CANCELED have no way out.
TRANSITIONS: Final[frozenset[tuple[OrderStatus, OrderStatus]]] = frozenset(
    {
        # funds.reserved when the order does not execute at once (`manual` mode, or a LIMIT order the market
        # does not cross yet): only the reserved flag changes; the order rests.
        (PENDING, PENDING),
        # funds.reserved when the quote crosses the order (or in `immediate` mode, at its limit price: the
        # same transaction marks it reserved and matches it), a later quote crossing it, or an admin's match.
        (PENDING, MATCHED),
        # A cancel by its customer or an admin, or funds.rejected. A cancel may overtake order.created on its
        # way to the account: the account then remembers it and rejects the late order.created.
        # Also the market's: an IOC or MARKET order not executable at once, a DAY order at the close, a
        # MARKET BUY whose cost at the quote exceeds what it reserved.
        (PENDING, CANCELED),
    }
)

CANCELED_BY_CUSTOMER: Final = "canceled by customer"
CANCELED_BY_ADMIN: Final = "canceled by admin"
NOT_MARKETABLE: Final = "not marketable"
EXPIRED: Final = "expired"
BEYOND_COLLAR: Final = "price moved beyond the collar"


class ReleaseRequested(OrderCanceled):
    """funds.reserved arrived for an order that is already CANCELED: the account must release the funds.

    Normally the account has already released them on order.canceled (or refused to reserve after it); this
    covers the reservation that was made while the cancel was in flight, so no money stays locked. It is
    published as a repeated order.canceled, which the account handles idempotently."""


OrderEvent = OrderCreated | OrderMatched | OrderCanceled


@dataclass(frozen=True)
class TransitionRefused:
    """A command asked for a move the lifecycle forbids; `current` is what the API reports (409)."""

    order_id: uuid.UUID
    current: OrderStatus
    requested: OrderStatus
    message: str


@dataclass(frozen=True)
class NotMarketable:
    """An admin's match of an order the market does not cross (409, with the quote it was checked against)."""

    order_id: uuid.UUID
    quote: Quote | None
    message: str


# --- The order ---------------------------------------------------------------------------------------------


@dataclass
class Order:
    id: uuid.UUID
    customer_id: uuid.UUID
    asset_name: str
    side: Side
    size: Decimal
    price: Decimal | None  # the limit; None for a MARKET order
    created_at: datetime
    updated_at: datetime
    status: OrderStatus = PENDING
    reason: str | None = None
    reserved: bool = False  # the account confirmed the funds (funds.reserved)
    order_type: OrderType = OrderType.LIMIT
    time_in_force: TimeInForce = TimeInForce.GTC
    reserve_price: Decimal | None = None  # a MARKET BUY: what it reserved per unit (the ask plus the collar)
    executed_price: Decimal | None = None  # once MATCHED

    @property
    def cost(self) -> Decimal | None:
        """size * price, exactly: what it executed for, or before that its limit (None: a MARKET order)."""
        price = self.executed_price or self.price
        return cost(self.size, price) if price is not None else None

    @property
    def buy_price(self) -> Decimal | None:
        """What a BUY reserves per unit: its limit, or a MARKET BUY's ask plus the collar."""
        return self.reserve_price or self.price

    @property
    def is_terminal(self) -> bool:
        """True once MATCHED or CANCELED: nothing changes it again."""
        return self.status in TERMINAL

    @property
    def rests(self) -> bool:
        """True while it waits for the market: PENDING, reserved, a LIMIT order that is not IOC."""
        return (
            self.status is PENDING
            and self.reserved
            and self.order_type is OrderType.LIMIT
            and self.time_in_force is not TimeInForce.IOC
        )

    def match(self, now: datetime) -> list[OrderEvent] | TransitionRefused:
        """Execute at the limit price (no market known): a PENDING LIMIT order whose funds are reserved."""
        refused = self._check_executable()
        if refused:
            return refused
        if self.price is None:
            return self._refuse(MATCHED, "a MARKET order executes only at the market's price")
        return self._match(self.price, now)

    def match_at(
        self, quote: Quote | None, now: datetime
    ) -> list[OrderEvent] | TransitionRefused | NotMarketable:
        """An admin's match: execute at the quote if it crosses the order (409 with the quote otherwise)."""
        refused = self._check_executable()
        if refused:
            return refused
        if quote is None or not quote.crosses(self.side, self.price):
            market = f"bid {plain(quote.bid)}, ask {plain(quote.ask)}" if quote else "no quote yet"
            return NotMarketable(self.id, quote, f"order is not marketable: {market}")
        price = quote.price_for(self.side)
        if self._beyond_collar(price):
            return NotMarketable(self.id, quote, f"order is not marketable: {BEYOND_COLLAR}")
        return self._match(price, now)

    def cancel(self, reason: str, now: datetime) -> list[OrderEvent] | TransitionRefused:
        """Cancel a PENDING order; MATCHED or CANCELED ones are refused."""
        return self._check(CANCELED) or self._cancel(reason, now)

    def reserve_funds_confirmed(
        self, mode: ExecutionMode, now: datetime, quote: Quote | None = None
    ) -> list[OrderEvent]:
        """The account reserved the funds: mark it, and execute it as `mode` says — in `immediate` mode at its
        limit price, in `market` mode at `quote` if it crosses it (else it rests, or an IOC or MARKET order is
        canceled); in `manual` mode it waits for an admin."""
        if self.status is CANCELED:
            # Odd edge: the reservation was made while the cancel was on its way (or raced it in the account).
            # Asking again is harmless: releasing a released reservation, or none, changes nothing.
            reason = self.reason or "order canceled"
            return [
                ReleaseRequested(
                    order_id=self.id, customer_id=self.customer_id, occurred_at=now, reason=reason
                )
            ]
        if self.status is MATCHED or self.reserved:
            return []  # a duplicate delivery: already applied
        self.reserved = True
        if mode is ExecutionMode.IMMEDIATE and self.price is not None:
            return self._match(self.price, now)
        self._set(PENDING, now)
        if mode is ExecutionMode.MANUAL:
            return []
        return self.meet(quote, now)  # `market`, and a MARKET order (no limit) in `immediate` mode

    def meet(self, quote: Quote | None, now: datetime) -> list[OrderEvent]:
        """A reserved PENDING order meets the market's latest `quote`: executed whole at it when it crosses
        the order; otherwise an IOC or MARKET order is canceled ("not marketable") and others rest ([])."""
        if self.status is not PENDING or not self.reserved:
            return []
        if quote is not None and quote.crosses(self.side, self.price):
            price = quote.price_for(self.side)
            return self._cancel(BEYOND_COLLAR, now) if self._beyond_collar(price) else self._match(price, now)
        if self.time_in_force is TimeInForce.IOC or self.order_type is OrderType.MARKET:
            return self._cancel(NOT_MARKETABLE, now)
        return []

    def expire(self, now: datetime) -> list[OrderEvent]:
        """The market closed: a DAY order still PENDING is canceled ("expired")."""
        if self.status is PENDING and self.time_in_force is TimeInForce.DAY:
            return self._cancel(EXPIRED, now)
        return []

    def reserve_funds_rejected(self, reason: str, now: datetime) -> list[OrderEvent]:
        """The account could not reserve the funds: a PENDING order becomes CANCELED with its reason."""
        if self.status is not PENDING:
            return []  # a duplicate, or the answer to an order canceled before the account saw it
        if self.reserved:
            # Odd edge: the account already confirmed this order's funds. It answers once per order, so a
            # contradicting answer is ignored and the reservation stands.
            return []
        return self._cancel(reason, now)

    def _check_executable(self) -> TransitionRefused | None:
        refused = self._check(MATCHED)
        if refused is None and not self.reserved:
            return self._refuse(MATCHED, "order cannot be matched before its funds are reserved")
        return refused

    def _beyond_collar(self, price: Decimal) -> bool:
        """True when a BUY at `price` would cost more than it reserved (only a MARKET BUY can)."""
        reserved = self.buy_price
        return self.side is Side.BUY and reserved is not None and price > reserved

    def _check(self, to: OrderStatus) -> TransitionRefused | None:
        if (self.status, to) in TRANSITIONS:
            return None
        return self._refuse(to, f"order is already {self.status}")

    def _set(self, to: OrderStatus, now: datetime, reason: str | None = None) -> None:
        if (self.status, to) not in TRANSITIONS:  # a bug in this module, not a client's mistake
            raise AssertionError(f"illegal order transition {self.status} -> {to}")
        self.status = to
        self.updated_at = now
        if reason is not None:
            self.reason = reason

    def _match(self, price: Decimal, now: datetime) -> list[OrderEvent]:
        self._set(MATCHED, now)
        self.executed_price = price
        matched = OrderMatched(
            order_id=self.id,
            customer_id=self.customer_id,
            occurred_at=now,
            asset_name=self.asset_name,
            side=self.side,
            size=self.size,
            executed_price=price,
        )
        return [matched]

    def _cancel(self, reason: str, now: datetime) -> list[OrderEvent]:
        self._set(CANCELED, now, reason)
        return [self._canceled(reason, now)]

    def _canceled(self, reason: str, now: datetime) -> OrderCanceled:
        return OrderCanceled(order_id=self.id, customer_id=self.customer_id, occurred_at=now, reason=reason)

    def _refuse(self, to: OrderStatus, message: str) -> TransitionRefused:
        return TransitionRefused(self.id, self.status, to, message)


# --- Placing an order --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlaceOrder:
    """The command: `size` of `asset_name`, at `price` TRY each or better (LIMIT) or at the market's price
    (MARKET, no price), until canceled, the day's close, or at once only (`time_in_force`)."""

    customer_id: uuid.UUID
    asset_name: str
    side: Side
    size: Decimal
    price: Decimal | None
    order_type: OrderType = OrderType.LIMIT
    time_in_force: TimeInForce = TimeInForce.GTC


@dataclass(frozen=True)
class Listing:
    """What the market says of the symbol an order is placed for: its rules (None: not listed), its latest
    quote (None: none yet), and the collar a MARKET BUY reserves above the ask."""

    instrument: Instrument | None
    quote: Quote | None
    collar: Decimal


@dataclass(frozen=True)
class OrderInvalid:
    """PlaceOrder refused; `problems` are messages for the client (422)."""

    problems: tuple[str, ...]


@dataclass(frozen=True)
class MarketUnavailable:
    """PlaceOrder refused for what the market is now (halted, no quote yet): the order may be placed later
    (409)."""

    message: str


@dataclass(frozen=True)
class OrderPlaced:
    """A new PENDING order and the order.created event to write with it."""

    order: Order
    event: OrderCreated


def place_order_problems(command: PlaceOrder) -> list[str]:
    """Why `command` cannot be placed, whatever the market; empty when it can."""
    problems = []
    if not command.size.is_finite() or command.size <= 0:
        problems.append("size must be greater than 0")
    if command.order_type is OrderType.MARKET:
        if command.price is not None:
            problems.append("a MARKET order has no price: it executes at the market's")
    elif command.price is None:
        problems.append("a LIMIT order needs a price")
    elif not command.price.is_finite() or command.price <= 0:
        problems.append("price must be greater than 0")
    symbol = symbol_problem(command.asset_name)
    if symbol:
        problems.append(symbol)
    elif command.asset_name == CASH:
        problems.append(f"{CASH} is the cash asset and cannot be ordered")
    return problems


def market_problems(command: PlaceOrder, listing: Listing) -> OrderInvalid | MarketUnavailable | None:
    """Why the market cannot take `command` (a valid one): not listed or not whole lots or a price off the
    tick grid or outside the band (422); halted, or a MARKET order with no quote to execute at (409)."""
    instrument, quote = listing.instrument, listing.quote
    if instrument is None:
        return OrderInvalid((f"unknown symbol {command.asset_name}: not a listed instrument",))
    if not instrument.is_open:
        return MarketUnavailable(f"{instrument.symbol} is {instrument.status}: it takes no orders now")
    problems = [instrument.size_problem(command.size)]
    if command.price is not None:
        problems.append(instrument.price_problem(command.price, quote.last if quote else None))
    found = tuple(p for p in problems if p)
    if found:
        return OrderInvalid(found)
    if command.order_type is OrderType.MARKET and quote is None:
        return MarketUnavailable(
            f"no quote for {instrument.symbol} yet: a MARKET order needs the market's price"
        )
    return None


def place_order(
    command: PlaceOrder, now: datetime, order_id: uuid.UUID | None = None, listing: Listing | None = None
) -> OrderPlaced | OrderInvalid | MarketUnavailable:
    """A new PENDING order and its order.created event, or the reasons it is refused. With no `listing` (no
    market known) only LIMIT orders are taken, checked by themselves."""
    problems = place_order_problems(command)
    if problems:
        return OrderInvalid(tuple(problems))
    if listing is None:
        if command.order_type is OrderType.MARKET:
            return MarketUnavailable(
                "MARKET orders need the market's prices, which this service does not have"
            )
    elif refused := market_problems(command, listing):
        return refused
    reserve_price = None
    if command.order_type is OrderType.MARKET and command.side is Side.BUY:
        assert listing is not None and listing.quote is not None and listing.instrument is not None
        reserve_price = collared_price(listing.quote.ask, listing.collar, listing.instrument.tick_size)
    order = Order(
        id=order_id or uuid.uuid4(),
        customer_id=command.customer_id,
        asset_name=command.asset_name,
        side=command.side,
        size=command.size,
        price=command.price,
        created_at=now,
        updated_at=now,
        order_type=command.order_type,
        time_in_force=command.time_in_force,
        reserve_price=reserve_price,
    )
    created = OrderCreated(
        order_id=order.id,
        customer_id=order.customer_id,
        occurred_at=now,
        asset_name=order.asset_name,
        side=order.side,
        size=order.size,
        price=order.price,
        order_type=order.order_type,
        time_in_force=order.time_in_force,
        reserve_price=reserve_price,
    )
    return OrderPlaced(order, created)
