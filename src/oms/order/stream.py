"""`GET /api/v1/orders/stream`: the caller's order changes as server-sent events (admins: everyone's).

While a stream is open in any replica, every write of an order notifies PostgreSQL's channel
`oms_order_changes` in its transaction (`store.py`), so the changes of every replica reach every replica at
commit. (A notifying transaction holds a cluster-wide lock through its commit — measured: it halves commits/s
under concurrency — so nothing is notified while no one watches: `StreamsOpen`.) Each process listens on one
connection of its own (`OrderChanges.run`); while it has streams open, it reads the changed orders (one query
per notification) and hands each to the streams that may see them. A stream starts with a snapshot — the
caller's PENDING orders and its latest ones — so a client that reconnects (to this replica or another) starts
from the current state; each event is the whole order, and the newest `updateDate` of an order wins. A stream
that falls too far behind, or whose process loses its listening connection, is ended: the client reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final

import asyncpg
from fastapi import APIRouter, Request

from oms.kernel.deps import Pool, own_customer
from oms.kernel.errors import error_responses
from oms.kernel.sse import EventStreamResponse, sse_event
from oms.kernel.tokens import CurrentUser
from oms.order import store
from oms.order.api import order_view
from oms.order.domain import PENDING, Order

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/orders", tags=["orders"])

SNAPSHOT_PENDING: Final = 1000  # PENDING orders sent when a stream starts
SNAPSHOT_LATEST: Final = 100  # and the latest orders
BACKLOG: Final = 10_000  # changes a stream may fall behind by before it is ended


@dataclass(eq=False)
class Subscription:
    """One open stream: the orders of `customer_id` (None: every customer's) as they change."""

    customer_id: uuid.UUID | None
    changes: asyncio.Queue[Order | None] = field(default_factory=lambda: asyncio.Queue(BACKLOG))

    def wants(self, customer_id: uuid.UUID) -> bool:
        return self.customer_id is None or self.customer_id == customer_id

    def offer(self, order: Order) -> bool:
        """Queue `order`; False when the stream is too far behind (it is then ended)."""
        try:
            self.changes.put_nowait(order)
        except asyncio.QueueFull:
            return False
        return True

    def end(self) -> None:
        """The stream ends after what is queued (one change dropped if the queue is full: it ends anyway)."""
        if self.changes.full():
            self.changes.get_nowait()
        self.changes.put_nowait(None)


class StreamsOpen:
    """Whether an order stream is open in this process or another (the order writers' question, asked on
    every write: answered from memory). Each process with streams open keeps a row in `order_streams` alive;
    every process reads whether another has one every `REFRESH` seconds. A process's first stream waits until
    every other process has surely read its row before it takes its snapshot, so no change after the
    snapshot goes unnotified."""

    REFRESH: Final = 0.5
    OPEN_FOR: Final = 10.0  # a row not renewed for this long (its process died) no longer counts

    def __init__(self) -> None:
        self.process = uuid.uuid4()
        self.here = 0  # streams open in this process
        self.elsewhere = False
        self._pool: asyncpg.Pool | None = None
        self._announced: float | None = None  # when this process's row was first written (monotonic)

    def __call__(self) -> bool:
        return self.here > 0 or self.elsewhere

    async def opened(self) -> None:
        """A stream of this process starts: once the others write notifications for it too."""
        self.here += 1
        if self._announced is None and self._pool is not None:
            async with self._pool.acquire() as conn:
                await store.keep_stream_open(conn, self.process, self.OPEN_FOR)
            self._announced = time.monotonic()
        if self._announced is not None:
            await asyncio.sleep(max(0.0, self._announced + 2 * self.REFRESH - time.monotonic()))

    def closed(self) -> None:
        self.here -= 1

    async def run(self, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
        """Keep this process's row while it has streams (gone when it has none), and read the others'."""
        self._pool = pool
        while not stop.is_set():
            try:
                async with pool.acquire() as conn:
                    if self.here:
                        await store.keep_stream_open(conn, self.process, self.OPEN_FOR)
                        self._announced = self._announced or time.monotonic()
                    elif self._announced is not None:
                        await store.close_stream(conn, self.process)
                        self._announced = None
                    self.elsewhere = await store.streams_open_elsewhere(conn, self.process)
            except (OSError, asyncpg.PostgresError) as exc:
                self.elsewhere = True  # unsure: notify rather than miss a change
                log.warning("reading which processes stream orders failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.REFRESH)


class OrderChanges:
    """The order changes of every replica, from the database's notifications, for this process's streams."""

    def __init__(self, database_url: str, pool: asyncpg.Pool, streams: StreamsOpen) -> None:
        self._url = database_url
        self._pool = pool
        self._streams = streams
        self._subscriptions: set[Subscription] = set()
        self._changed: dict[uuid.UUID, uuid.UUID] = {}  # order -> customer, waiting to be read
        self._wake = asyncio.Event()

    @contextlib.asynccontextmanager
    async def subscribe(self, customer_id: uuid.UUID | None) -> AsyncIterator[Subscription]:
        """A stream's changes from now on (once every replica notifies them)."""
        subscription = Subscription(customer_id)
        self._subscriptions.add(subscription)
        try:
            await self._streams.opened()
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            self._streams.closed()

    async def run(self, stop: asyncio.Event) -> None:
        """Listen for changes and hand them out until `stop`; a lost connection ends the open streams (their
        clients reconnect and get a snapshot) and is made again."""
        fan_out = asyncio.create_task(self._fan_out(stop), name="order-changes-fan-out")
        gate = asyncio.create_task(self._streams.run(self._pool, stop), name="order-streams-open")
        try:
            while not stop.is_set():
                try:
                    await self._listen(stop)
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning("listening for order changes failed (%s); listening again", exc)
                for subscription in list(self._subscriptions):
                    subscription.end()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1)
        finally:
            for task in (fan_out, gate):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _listen(self, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(self._url)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _: lost.set())
        try:
            await conn.add_listener(store.CHANGES_CHANNEL, self._notified)
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()
        finally:
            if not conn.is_closed():
                await conn.close()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if self._subscriptions:  # nobody streams: nothing to read
            self._changed.update(store.changed_orders(payload))
            self._wake.set()

    async def _fan_out(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._wake.wait()
            self._wake.clear()
            changed, self._changed = self._changed, {}
            wanted = [i for i, c in changed.items() if any(s.wants(c) for s in self._subscriptions)]
            if not wanted:
                continue
            try:
                async with self._pool.acquire() as conn:
                    orders = await store.by_ids(conn, wanted)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("reading %d changed orders failed (%s): their streams end", len(wanted), exc)
                orders = []
                for subscription in list(self._subscriptions):
                    subscription.end()
            for order in orders:
                for subscription in list(self._subscriptions):
                    if subscription.wants(order.customer_id) and not subscription.offer(order):
                        subscription.end()


async def _snapshot(pool: asyncpg.Pool, customer_id: uuid.UUID | None) -> list[Order]:
    """The caller's PENDING orders and its latest ones, oldest first, each once."""
    async with pool.acquire() as conn:
        pending = store.OrderFilter(customer_id=customer_id, status=PENDING)
        orders = await store.page(conn, pending, SNAPSHOT_PENDING, None)
        orders += await store.page(conn, store.OrderFilter(customer_id=customer_id), SNAPSHOT_LATEST, None)
    unique = {o.id: o for o in orders}
    return sorted(unique.values(), key=lambda o: (o.created_at, o.id))


async def _events(
    changes: OrderChanges, pool: asyncpg.Pool, customer_id: uuid.UUID | None
) -> AsyncIterator[bytes]:
    async with changes.subscribe(customer_id) as subscription:
        for known in await _snapshot(pool, customer_id):
            yield sse_event(order_view(known), event="order")
        while (changed := await subscription.changes.get()) is not None:
            yield sse_event(order_view(changed), event="order")


@router.get(
    "/stream",
    response_class=EventStreamResponse,
    status_code=200,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "`order` events"},
        **error_responses(403),
    },
)
async def stream_orders(
    request: Request, user: CurrentUser, pool: Pool, customerId: uuid.UUID | None = None
) -> EventStreamResponse:
    """Server-sent events `order` (the order as `GET /api/v1/orders/{id}` shows it): first the caller's
    PENDING and latest orders, then each change. Customers see only their own; admins everyone's (or one
    customer's with `customerId`)."""
    customer_id = own_customer(user, customerId)
    return EventStreamResponse(_events(request.app.state.order_changes, pool, customer_id))
