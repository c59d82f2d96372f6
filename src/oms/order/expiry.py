"""The market's close: DAY orders still PENDING then are canceled, "expired" (SPEC §3b).

A timer waits for the next close (`OMS_MARKET_CLOSE`, e.g. 18:00 Europe/Istanbul) by the injected clock and
expires, in units of work of up to `batch` orders, the PENDING DAY orders placed before it. At start it does
the same for the last close, which a stopped service may have missed. Replicas may all do it: each order's
row is locked, and an order another replica expired meanwhile is skipped (it is no longer PENDING). Every
day is a trading day here: holidays and weekends are a calendar this service does not have.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from oms.kernel.settings import MarketClose
from oms.kernel.unit_of_work import UnitOfWorkFactory
from oms.order.execution import Clock, utc_now
from oms.order.store import Orders

log = logging.getLogger(__name__)


async def expire_day_orders(
    unit_of_work: UnitOfWorkFactory[Orders], close: datetime, now: datetime, batch: int = 500
) -> int:
    """Cancel ("expired") every PENDING DAY order placed before `close`; returns how many."""
    expired = 0
    while True:
        async with unit_of_work() as tx:
            orders = await tx.repository.lock_day_orders(close, batch)
            changed = []
            for order in orders:
                events = order.expire(now)
                if events:
                    tx.emit(*events)
                    changed.append(order)
            tx.repository.save(*changed)
        expired += len(changed)
        if len(orders) < batch:
            return expired


async def run_closes(
    unit_of_work: UnitOfWorkFactory[Orders],
    close: MarketClose,
    stop: asyncio.Event,
    clock: Clock = utc_now,
) -> None:
    """At start (for the last close) and at every close until `stop`: expire the DAY orders placed before
    it. The clock is read again every second, so a clock that jumps (or is moved by a test) is followed."""
    at = close.last(clock())
    while not stop.is_set():
        try:
            expired = await expire_day_orders(unit_of_work, at, clock())
        except Exception:
            log.exception("expiring the DAY orders of the close at %s failed; trying again", at)
            await _wait(stop, 5)
            continue
        if expired:
            log.info("market closed at %s: %d DAY orders expired", at.isoformat(), expired)
        at = close.next(at)  # a close missed (the process asleep) comes at once
        while not stop.is_set() and clock() < at:
            await _wait(stop, min((at - clock()).total_seconds(), 1.0))


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
