"""The order service's commands and event handlers. Each runs in one unit of work: load (locked), ask the
domain, stage the changes and emit the events — which then go to the database together."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from oms.kernel.consumer import NotYetVisible, Outcome
from oms.kernel.events import AnyEvent, Envelope, FundsRejected, FundsReserved
from oms.kernel.market import MarketData, Quote
from oms.kernel.settings import ExecutionMode
from oms.kernel.unit_of_work import UnitOfWork, UnitOfWorkFactory
from oms.order.domain import NotMarketable, Order, OrderEvent, OrderPlaced, TransitionRefused
from oms.order.execution import tradable_quote
from oms.order.store import Orders


class UnknownOrder(NotYetVisible):
    """An event for an order this database does not have, or does not show yet (retried, then
    dead-lettered)."""


async def place_orders(tx: UnitOfWork[Orders], placed: Sequence[OrderPlaced]) -> list[None]:
    """Store new orders and emit their order.created events (the group commit's write)."""
    tx.repository.add(*(p.order for p in placed))
    tx.emit(*(p.event for p in placed))
    return [None] * len(placed)


async def handle_batch(
    unit_of_work: UnitOfWorkFactory[Orders],
    mode: ExecutionMode,
    envelopes: Sequence[Envelope[AnyEvent]],
    *,
    market: MarketData | None = None,
    rested: Callable[[Sequence[Order]], None] | None = None,
) -> list[Outcome]:
    """Apply events from the account service in stream order, each at most once, in one unit of work. An
    order whose funds are reserved executes as `mode` says, at `market`'s latest quote; those left resting
    are handed to `rested` once the unit has committed."""
    failed: dict[uuid.UUID, Exception] = {}
    async with unit_of_work() as tx:
        todo = await tx.inbox.first_deliveries(envelopes)
        orders = await tx.repository.lock(envelope.order_id for envelope in todo)
        changed: dict[uuid.UUID, Order] = {}
        now = datetime.now(UTC)
        for envelope in todo:
            order = orders.get(envelope.order_id)
            if order is None:
                failed[envelope.id] = UnknownOrder(str(envelope.order_id))
                continue
            before = (order.status, order.reserved)
            quote = tradable_quote(market, order.asset_name) if market else None
            tx.emit(*_answer(order, envelope.event, mode, now, quote))
            if (order.status, order.reserved) != before:
                changed[order.id] = order
        tx.inbox.forget(failed)
        tx.repository.save(*changed.values())
    if rested is not None:
        rested([o for o in changed.values() if o.rests])
    return [failed.get(envelope.id) for envelope in envelopes]


def _answer(
    order: Order, event: AnyEvent, mode: ExecutionMode, now: datetime, quote: Quote | None
) -> list[OrderEvent]:
    """The account's answer to the order's creation, applied to the order."""
    match event:
        case FundsReserved():
            return order.reserve_funds_confirmed(mode, now, quote)
        case FundsRejected():
            return order.reserve_funds_rejected(event.reason, now)
    return []  # not for us


Refusal = TransitionRefused | NotMarketable
Change = Callable[[Order, datetime], list[OrderEvent] | Refusal]


def cancel(reason: str) -> Change:
    return lambda order, now: order.cancel(reason, now)


def match_at_market(market: MarketData) -> Change:
    """An admin's match at the symbol's latest quote (none while it is halted), read once the order is
    locked."""
    return lambda order, now: order.match_at(tradable_quote(market, order.asset_name), now)


async def change_order(
    unit_of_work: UnitOfWorkFactory[Orders], order_id: uuid.UUID, change: Change
) -> Order | Refusal | None:
    """Cancel or match an order (a command from the API), the row locked so that a racing cancel and match
    queue up and the second is refused. None if there is no such order."""
    async with unit_of_work() as tx:
        order = await tx.repository.get(order_id, for_update=True)
        if order is None:
            return None
        outcome = change(order, datetime.now(UTC))
        if isinstance(outcome, TransitionRefused | NotMarketable):
            return outcome
        tx.repository.save(order)
        tx.emit(*outcome)
        return order
