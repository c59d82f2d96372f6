"""The order service's commands and event handlers: load, ask the domain, store, queue the events —
all in one transaction."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from oms.kernel import events as wire
from oms.kernel.consumer import Outcome
from oms.kernel.inbox import first_deliveries, unrecord
from oms.kernel.outbox import add_to_outbox
from oms.kernel.settings import ExecutionMode
from oms.order import store
from oms.order.domain import (
    Order,
    OrderCanceled,
    OrderCreated,
    OrderEvent,
    OrderMatched,
    OrderPlaced,
    ReleaseRequested,
    TransitionRefused,
)


def to_wire(event: OrderEvent) -> wire.Envelope:
    """The published form of a domain event."""
    match event:
        case OrderCreated():
            return wire.OrderCreated.new(
                order_id=event.order_id,
                customer_id=event.customer_id,
                data=wire.OrderCreatedData(
                    order_id=event.order_id,
                    customer_id=event.customer_id,
                    asset_name=event.asset_name,
                    order_side=event.side,
                    size=event.size,
                    price=event.price,
                ),
            )
        case OrderMatched():
            return wire.OrderMatched.new(
                order_id=event.order_id,
                customer_id=event.customer_id,
                data=wire.OrderMatchedData(
                    asset_name=event.asset_name, order_side=event.side, size=event.size, price=event.price
                ),
            )
        case OrderCanceled() | ReleaseRequested():
            # A release request is a repeated cancel: the account releases a HELD reservation once.
            return wire.OrderCanceled.new(
                order_id=event.order_id,
                customer_id=event.customer_id,
                data=wire.OrderCanceledData(reason=event.reason),
            )


async def record(
    conn: asyncpg.Connection, order: Order, events: list[OrderEvent], *, new: bool = False
) -> None:
    """Store the order's new state and queue its events, in the caller's transaction."""
    published = (to_wire(event) for event in events)
    if new:
        await add_to_outbox(conn, *published, together_with=[store.adding(order)])
        return
    await store.save(conn, order)
    await add_to_outbox(conn, *published)


async def place_orders(conn: asyncpg.Connection, placed: Sequence[OrderPlaced]) -> list[None]:
    """Store new orders and queue their order.created events, in the caller's transaction."""
    orders = store.adding(*(p.order for p in placed))
    await add_to_outbox(conn, *(to_wire(p.event) for p in placed), together_with=[orders])
    return [None] * len(placed)


class UnknownOrder(Exception):
    """An event for an order this database does not have (retried, then dead-lettered)."""


@dataclass(frozen=True)
class OrderHandlers:
    pool: asyncpg.Pool
    mode: ExecutionMode

    async def handle(self, event: wire.Envelope) -> None:
        """Apply one event from the account service, at most once; raises what kept it from being applied."""
        [outcome] = await self.handle_batch([event])
        if outcome is not None:
            raise outcome

    async def handle_batch(self, events: Sequence[wire.Envelope]) -> list[Outcome]:
        """Apply events from the account service in stream order, each at most once, in one transaction."""
        failed: dict[uuid.UUID, Exception] = {}
        async with self.pool.acquire() as conn, conn.transaction():
            todo = await first_deliveries(conn, events)
            orders = await store.lock(conn, sorted({event.order_id for event in todo}))
            changed: dict[uuid.UUID, Order] = {}
            published: list[OrderEvent] = []
            now = datetime.now(UTC)
            for event in todo:
                order = orders.get(event.order_id)
                if order is None:
                    failed[event.id] = UnknownOrder(str(event.order_id))
                    continue
                before = (order.status, order.reserved)
                published += self._apply(order, event, now)
                if (order.status, order.reserved) != before:
                    changed[order.id] = order
            await unrecord(conn, failed)
            await store.save(conn, *changed.values())
            await add_to_outbox(conn, *(to_wire(e) for e in published))
        return [failed.get(event.id) for event in events]

    def _apply(self, order: Order, event: wire.Envelope, now: datetime) -> list[OrderEvent]:
        if isinstance(event, wire.FundsReserved):
            return order.reserve_funds_confirmed(self.mode, now)
        if isinstance(event, wire.FundsRejected):
            return order.reserve_funds_rejected(event.data.reason, now)
        return []  # not for us


Change = Callable[[Order, datetime], list[OrderEvent] | TransitionRefused]


def cancel(reason: str) -> Change:
    return lambda order, now: order.cancel(reason, now)


def match(order: Order, now: datetime) -> list[OrderEvent] | TransitionRefused:
    return order.match(now)


async def change_order(
    pool: asyncpg.Pool, order_id: uuid.UUID, change: Change
) -> Order | TransitionRefused | None:
    """Cancel or match an order (a command from the API), the row locked so that a racing cancel and match
    queue up and the second is refused. None if there is no such order."""
    async with pool.acquire() as conn, conn.transaction():
        order = await store.get(conn, order_id, for_update=True)
        if order is None:
            return None
        outcome = change(order, datetime.now(UTC))
        if isinstance(outcome, TransitionRefused):
            return outcome
        await record(conn, order, outcome)
        return order
