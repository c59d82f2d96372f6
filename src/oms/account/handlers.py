"""The account service's event handlers: order.created → reserve, order.canceled → release,
order.matched → settle. Each runs in one transaction with its inbox row, balance locks and outbox events."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from oms.account import domain, store
from oms.account.domain import AccountEvent, Effect, FundsRejected, FundsReserved, OrderTerms, Problem
from oms.kernel import events as wire
from oms.kernel.inbox import first_delivery
from oms.kernel.money import CASH, Side
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


async def commit_effect(conn: asyncpg.Connection, effect: Effect) -> None:
    """Store `effect` and queue its events, in the caller's transaction."""
    await store.apply(conn, effect)
    for event in effect.events:
        await add_to_outbox(conn, to_wire(event))


def _terms(event: wire.OrderCreated | wire.OrderMatched) -> OrderTerms:
    d = event.data
    return OrderTerms(event.order_id, event.customer_id, d.asset_name, d.order_side, d.size, d.price)


async def _reserve(conn: asyncpg.Connection, event: wire.OrderCreated) -> Effect:
    terms = _terms(event)
    tombstone = await store.tombstone_of(conn, terms.order_id)
    reservation = await store.reservation_of(conn, terms.order_id)
    balances = await store.lock_balances(conn, terms.customer_id, [terms.reserved_asset])
    return domain.reserve_funds(terms, balances, reservation=reservation, tombstone=tombstone)


async def _release(conn: asyncpg.Connection, event: wire.OrderCanceled) -> Effect:
    reservation = await store.reservation_of(conn, event.order_id)
    tombstone = await store.tombstone_of(conn, event.order_id)
    names = [reservation.asset_name] if reservation else []
    balances = await store.lock_balances(conn, event.customer_id, names)
    return domain.release_canceled_order(
        event.order_id,
        event.customer_id,
        reservation=reservation,
        tombstone=tombstone,
        asset=balances.get(reservation.asset_name) if reservation else None,
    )


async def _settle(conn: asyncpg.Connection, event: wire.OrderMatched) -> Effect:
    terms = _terms(event)
    reservation = await store.reservation_of(conn, terms.order_id)
    received = terms.asset_name if terms.side is Side.BUY else CASH
    balances = await store.lock_balances(
        conn, terms.customer_id, [terms.reserved_asset, received], create=[received]
    )
    return domain.settle(reservation, terms, balances)


@dataclass(frozen=True)
class AccountHandlers:
    pool: asyncpg.Pool

    async def handle(self, event: wire.Envelope) -> None:
        """Apply one event from the order service, at most once."""
        async with self.pool.acquire() as conn, conn.transaction():
            if not await first_delivery(conn, event.id):
                return
            # One order's events one at a time, across replicas too: a cancel handled while its order's
            # creation is being handled elsewhere would otherwise miss the reservation being made.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", str(event.order_id))
            if isinstance(event, wire.OrderCreated):
                effect = await _reserve(conn, event)
            elif isinstance(event, wire.OrderCanceled):
                effect = await _release(conn, event)
            elif isinstance(event, wire.OrderMatched):
                effect = await _settle(conn, event)
            else:
                return  # not for us
            if effect.refused is not None:
                # Rolls back the inbox row too: the event is retried and, if it stays wrong, dead-lettered.
                assert effect.refused.problem is Problem.INCONSISTENT, effect.refused
                raise InconsistentEvent(effect.refused.message)
            await commit_effect(conn, effect)
