"""The account service's event handlers: order.created → reserve, order.canceled → release,
order.matched → settle. A batch of events runs in one transaction with their inbox rows, order and balance
locks and outbox events."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from oms.account import store
from oms.account.domain import (
    NOTHING,
    AccountEvent,
    Asset,
    BalanceKey,
    Book,
    Effect,
    FundsRejected,
    FundsReserved,
    OrderTerms,
    Problem,
)
from oms.kernel import events as wire
from oms.kernel.consumer import Outcome
from oms.kernel.inbox import first_deliveries, unrecord
from oms.kernel.outbox import add_to_outbox


class InconsistentEvent(Exception):
    """An event contradicts the stored state (retried, then dead-lettered for a person to look at)."""


def to_wire(event: AccountEvent) -> wire.Envelope:
    """The published form of a domain event."""
    match event:
        case FundsReserved():
            return wire.FundsReserved.new(
                order_id=event.order_id,
                customer_id=event.customer_id,
                data=wire.FundsReservedData(
                    reservation_id=event.reservation_id, asset_name=event.asset_name, amount=event.amount
                ),
            )
        case FundsRejected():
            return wire.FundsRejected.new(
                order_id=event.order_id,
                customer_id=event.customer_id,
                data=wire.FundsRejectedData(reason=event.reason),
            )


async def commit_effects(conn: asyncpg.Connection, effects: Sequence[Effect]) -> None:
    """Store `effects` and queue their events, in the caller's transaction."""
    events = (to_wire(event) for effect in effects for event in effect.events)
    await add_to_outbox(conn, *events, together_with=store.writes(effects))


def _terms(event: wire.OrderCreated | wire.OrderMatched) -> OrderTerms:
    d = event.data
    return OrderTerms(event.order_id, event.customer_id, d.asset_name, d.order_side, d.size, d.price)


async def _load(conn: asyncpg.Connection, events: Sequence[wire.Envelope]) -> tuple[Book, list[Asset]]:
    """Lock and read what `events` touch: their orders, reservations, tombstones and balances; also the
    balances that settlements pay into (created at zero if missing)."""
    order_ids = sorted({event.order_id for event in events})
    await store.lock_orders(conn, order_ids)
    reservations = await store.reservations_of(conn, order_ids)
    tombstones = await store.tombstones_of(conn, order_ids)
    needed: set[BalanceKey] = set()
    received: set[BalanceKey] = set()  # created (at zero) if missing: settling pays into them
    for event in events:
        if isinstance(event, wire.OrderCreated | wire.OrderMatched):
            terms = _terms(event)
            needed.add((terms.customer_id, terms.reserved_asset))
            if isinstance(event, wire.OrderMatched):
                received.add((terms.customer_id, terms.received_asset))
        elif isinstance(event, wire.OrderCanceled) and (held := reservations.get(event.order_id)):
            needed.add((held.customer_id, held.asset_name))
    balances = await store.lock_balances(conn, needed, create=received)
    return Book(balances, reservations, tombstones), [balances[key] for key in received if key in balances]


def _decide(book: Book, event: wire.Envelope) -> Effect:
    if isinstance(event, wire.OrderCreated):
        return book.reserve_funds(_terms(event))
    if isinstance(event, wire.OrderCanceled):
        return book.release_canceled_order(event.order_id, event.customer_id)
    if isinstance(event, wire.OrderMatched):
        return book.settle(_terms(event))
    return NOTHING  # not for us


@dataclass(frozen=True)
class AccountHandlers:
    pool: asyncpg.Pool

    async def handle(self, event: wire.Envelope) -> None:
        """Apply one event from the order service, at most once; raises what kept it from being applied."""
        [outcome] = await self.handle_batch([event])
        if outcome is not None:
            raise outcome

    async def handle_batch(self, events: Sequence[wire.Envelope]) -> list[Outcome]:
        """Apply events from the order service in stream order, each at most once, in one transaction."""
        failed: dict[uuid.UUID, Exception] = {}
        async with self.pool.acquire() as conn, conn.transaction():
            todo = await first_deliveries(conn, events)
            book, receiving = await _load(conn, todo)
            effects = []
            for event in todo:
                effect = _decide(book, event)
                if effect.refused is not None:
                    # Not applied: retried, and if it stays wrong, dead-lettered for a person to look at.
                    assert effect.refused.problem is Problem.INCONSISTENT, effect.refused
                    failed[event.id] = InconsistentEvent(effect.refused.message)
                else:
                    effects.append(effect)
            await unrecord(conn, failed)
            await store.drop_unused(conn, receiving, effects)
            await commit_effects(conn, effects)
        return [failed.get(event.id) for event in events]
