"""Execution at market prices (`market` mode): resting orders meet each new quote.

An order whose funds are reserved is decided by the event handler at the latest quote (`handlers.py`); one
that the quote does not cross rests here (`rest`), in the index of `resting.py`. Each new quote of the market
(`quoted`, a `MarketData` listener) costs a look at the tops of its symbol's two heaps; one that crosses an
order is queued, and a single task takes the queued quotes, takes off the book the orders each crosses, and
executes them at it in one unit of work — the rows locked, each order changed only if still PENDING
(`Order.meet`), `order.matched` written with it. A quote seen twice finds nothing left to take; an order
executed or canceled elsewhere (another replica, an admin) is found so in the database and left alone.

The book lives in memory: it is filled from the database at start (and again every `resync_seconds`, which
also picks up orders another replica let rest) and checked against the latest quotes then, so a restarted
service resumes from where the market is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

from prometheus_client import Gauge, Histogram

from oms.kernel.market import MarketData, Quote
from oms.kernel.unit_of_work import UnitOfWorkFactory
from oms.order.domain import Order
from oms.order.resting import RestingOrders
from oms.order.store import Orders

log = logging.getLogger(__name__)

RESTING: Final = Gauge("oms_order_resting_orders", "Orders resting on the market in this process's book")
QUOTE_TO_EXECUTION: Final = Histogram(
    "oms_order_quote_to_execution_seconds",
    "From a crossing quote's arrival to the commit of the executions it made",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)

Clock = Callable[[], datetime]
# The reserved PENDING orders (changed at or after the given time; None: all of them).
Load = Callable[[datetime | None], Awaitable[list[Order]]]
# A resync reads what changed since the previous one began, less this much: replicas' clocks may differ (by
# far less, under NTP). Not more: each order in that window is read again, and 10,000 orders placed at once
# (the bench's resting phase) cost ~0.1 s of this process's loop per read.
RESYNC_OVERLAP: Final = timedelta(seconds=5)


def utc_now() -> datetime:
    return datetime.now(UTC)


def tradable_quote(market: MarketData, symbol: str) -> Quote | None:
    """The symbol's latest quote, if orders may execute at it: none while the instrument is not OPEN (halted,
    or no longer listed)."""
    instrument = market.instrument(symbol)
    return market.quote(symbol) if instrument is not None and instrument.is_open else None


class MarketExecution:
    """The resting orders of this process and the task that executes them as quotes cross them."""

    def __init__(
        self,
        unit_of_work: UnitOfWorkFactory[Orders],
        market: MarketData,
        load: Load,
        *,
        clock: Clock = utc_now,
        resync_seconds: float = 15.0,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._market = market
        self._load = load
        self._clock = clock
        self._resync_seconds = resync_seconds
        self.book = RestingOrders()
        self._queued: list[tuple[Quote, float]] = []  # (quote, when it arrived)
        self._wake = asyncio.Event()
        self._resync_soon = asyncio.Event()
        self._synced_at: datetime | None = None  # when the last complete resync began

    async def quoted(self, quote: Quote) -> None:
        """A new quote (the market's listener): queued only if it crosses a resting order (and its instrument
        is OPEN: a halted one's orders wait)."""
        if self.book.crosses(quote) and tradable_quote(self._market, quote.symbol) is not None:
            self._queue(quote)

    def rest(self, orders: Iterable[Order]) -> None:
        """These orders now rest (committed): on the book, and checked at once against the latest quote,
        which may have moved since the handler decided."""
        resting = [o for o in orders if o.rests]
        self.book.add(resting)
        RESTING.set(len(self.book))
        self._check_latest({o.asset_name for o in resting})

    def forget(self, order_ids: Iterable[uuid.UUID]) -> None:
        """These orders no longer rest (canceled)."""
        self.book.remove(order_ids)
        RESTING.set(len(self.book))

    async def run(self, stop: asyncio.Event) -> None:
        """Fill the book from the database, then execute crossed orders until `stop` is set."""
        await self.resync()
        resync = asyncio.create_task(self._keep_in_sync(stop), name="order-execution-resync")
        try:
            while not stop.is_set():
                waiter = asyncio.create_task(self._wake.wait())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                await self.execute_queued()
        finally:
            resync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await resync

    async def execute_queued(self) -> int:
        """Execute the orders the queued quotes cross, each at the first quote that crossed it; returns how
        many changed (executed, or canceled by the collar)."""
        self._wake.clear()
        queued, self._queued = self._queued, []
        crossings = [(quote, arrived, self.book.take_crossed(quote)) for quote, arrived in queued]
        crossings = [c for c in crossings if c[2]]
        RESTING.set(len(self.book))
        if not crossings:
            return 0
        try:
            changed = await self._execute([(quote, ids) for quote, _, ids in crossings])
        except Exception:
            # Taken off the book but not executed (the database unreachable?): the resync puts them back.
            log.exception("executing %d crossed orders failed", sum(len(c[2]) for c in crossings))
            self._resync_soon.set()
            return 0
        done = time.monotonic()
        for _, arrived, _ in crossings:
            QUOTE_TO_EXECUTION.observe(done - arrived)
        return changed

    async def resync(self) -> None:
        """Put the orders the database says rest on the book (those another replica let rest too: the first
        time all, then those changed since the last resync); decide reserved orders that cannot rest (IOC or
        MARKET, left from another mode); check the latest quotes."""
        began = self._clock()
        since = self._synced_at - RESYNC_OVERLAP if self._synced_at else None
        orders = await self._load(since)
        leftovers = [o for o in orders if not o.rests]
        if leftovers:
            await self._decide(leftovers)
        self.book.add(o for o in orders if o.rests)
        RESTING.set(len(self.book))
        self._check_latest(self.book.symbols())
        self._synced_at = began

    async def _execute(self, crossings: Sequence[tuple[Quote, list[uuid.UUID]]]) -> int:
        async with self._unit_of_work() as tx:
            orders = await tx.repository.lock(i for _, ids in crossings for i in ids)
            now = self._clock()
            changed = []
            for quote, ids in crossings:
                for order in (orders[i] for i in ids if i in orders):
                    events = order.meet(quote, now)
                    if events:
                        tx.emit(*events)
                        changed.append(order)
            tx.repository.save(*changed)
        return len(changed)

    async def _decide(self, orders: Sequence[Order]) -> None:
        async with self._unit_of_work() as tx:
            locked = await tx.repository.lock(o.id for o in orders)
            now = self._clock()
            changed = []
            for order in locked.values():
                events = order.meet(tradable_quote(self._market, order.asset_name), now)
                if events:
                    tx.emit(*events)
                    changed.append(order)
            tx.repository.save(*changed)

    def _check_latest(self, symbols: Iterable[str]) -> None:
        for symbol in symbols:
            quote = tradable_quote(self._market, symbol)
            if quote is not None and self.book.crosses(quote):
                self._queue(quote)

    def _queue(self, quote: Quote) -> None:
        self._queued.append((quote, time.monotonic()))
        self._wake.set()

    async def _keep_in_sync(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resync_soon.wait(), self._resync_seconds)
            self._resync_soon.clear()
            try:
                await self.resync()
            except Exception:
                log.exception("reloading the resting orders failed; trying again")
                await asyncio.sleep(1)
