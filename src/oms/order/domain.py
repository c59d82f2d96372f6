"""Order lifecycle rules: PENDING -> MATCHED | CANCELED, decided here and nowhere else.

An `Order` is changed only through its methods. Each returns the events to write to the outbox in the same
transaction, or a `TransitionRefused` when a command (match, cancel) asks for a move the table forbids.
Events from the account service (funds reserved or rejected) are facts: they are never refused, but a late
or duplicated one may change nothing, or ask the account to undo what it did (see `reserve_funds_confirmed`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Final

from oms.kernel.events import OrderCanceled, OrderCreated, OrderMatched
from oms.kernel.money import CASH, Side, cost, symbol_problem
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
        # funds.reserved in `manual` mode: only the reserved flag changes; the order waits for an admin.
        (PENDING, PENDING),
        # An admin's match once funds are reserved, or funds.reserved in `immediate` mode (the same
        # transaction marks it reserved and matches it, at its limit price).
        (PENDING, MATCHED),
        # A cancel by its customer or an admin, or funds.rejected. A cancel may overtake order.created on its
        # way to the account: the account then remembers it and rejects the late order.created.
        (PENDING, CANCELED),
    }
)

CANCELED_BY_CUSTOMER: Final = "canceled by customer"
CANCELED_BY_ADMIN: Final = "canceled by admin"


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


# --- The order ---------------------------------------------------------------------------------------------


@dataclass
class Order:
    id: uuid.UUID
    customer_id: uuid.UUID
    asset_name: str
    side: Side
    size: Decimal
    price: Decimal
    created_at: datetime
    updated_at: datetime
    status: OrderStatus = PENDING
    reason: str | None = None
    reserved: bool = False  # the account confirmed the funds (funds.reserved)

    @property
    def cost(self) -> Decimal:
        """size * price, exactly: the TRY a BUY reserves and a SELL is paid."""
        return cost(self.size, self.price)

    @property
    def is_terminal(self) -> bool:
        """True once MATCHED or CANCELED: nothing changes it again."""
        return self.status in TERMINAL

    def match(self, now: datetime) -> list[OrderEvent] | TransitionRefused:
        """Execute at the limit price; only a PENDING order whose funds are reserved."""
        refused = self._check(MATCHED)
        if refused:
            return refused
        if not self.reserved:
            return self._refuse(MATCHED, "order cannot be matched before its funds are reserved")
        return self._match(now)

    def cancel(self, reason: str, now: datetime) -> list[OrderEvent] | TransitionRefused:
        """Cancel a PENDING order; MATCHED or CANCELED ones are refused."""
        return self._check(CANCELED) or self._cancel(reason, now)

    def reserve_funds_confirmed(self, mode: ExecutionMode, now: datetime) -> list[OrderEvent]:
        """The account reserved the funds: mark it; in `immediate` mode also match it at its limit price."""
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
        if mode is ExecutionMode.IMMEDIATE:
            return self._match(now)
        self._set(PENDING, now)
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

    def _match(self, now: datetime) -> list[OrderEvent]:
        self._set(MATCHED, now)
        matched = OrderMatched(
            order_id=self.id,
            customer_id=self.customer_id,
            occurred_at=now,
            asset_name=self.asset_name,
            side=self.side,
            size=self.size,
            price=self.price,
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
    """The command: a limit order for `size` of `asset_name` at `price` TRY each."""

    customer_id: uuid.UUID
    asset_name: str
    side: Side
    size: Decimal
    price: Decimal


@dataclass(frozen=True)
class OrderInvalid:
    """PlaceOrder refused; `problems` are messages for the client (422)."""

    problems: tuple[str, ...]


@dataclass(frozen=True)
class OrderPlaced:
    """A new PENDING order and the order.created event to write with it."""

    order: Order
    event: OrderCreated


def place_order_problems(command: PlaceOrder) -> list[str]:
    """Why `command` cannot be placed; empty when it can."""
    problems = []
    if not command.size.is_finite() or command.size <= 0:
        problems.append("size must be greater than 0")
    if not command.price.is_finite() or command.price <= 0:
        problems.append("price must be greater than 0")
    symbol = symbol_problem(command.asset_name)
    if symbol:
        problems.append(symbol)
    elif command.asset_name == CASH:
        problems.append(f"{CASH} is the cash asset and cannot be ordered")
    return problems


def place_order(
    command: PlaceOrder, now: datetime, order_id: uuid.UUID | None = None
) -> OrderPlaced | OrderInvalid:
    """A new PENDING order and its order.created event, or the reasons it is invalid."""
    problems = place_order_problems(command)
    if problems:
        return OrderInvalid(tuple(problems))
    order = Order(
        id=order_id or uuid.uuid4(),
        customer_id=command.customer_id,
        asset_name=command.asset_name,
        side=command.side,
        size=command.size,
        price=command.price,
        created_at=now,
        updated_at=now,
    )
    created = OrderCreated(
        order_id=order.id,
        customer_id=order.customer_id,
        occurred_at=now,
        asset_name=order.asset_name,
        side=order.side,
        size=order.size,
        price=order.price,
    )
    return OrderPlaced(order, created)
