"""Order statuses live: the orders a page shows, followed through the order service's stream of the signed-in
user's order changes (`GET /api/v1/orders/stream`, called with their token, so it holds only what they may
see).

A page asks only for its PENDING orders (a MATCHED or CANCELED one never changes again) and is done once none
is left. Whenever the stream (re)opens, the order service first sends a snapshot taken after it started
listening; once its first event arrives, the orders still PENDING here are read once more, so a change made
while no stream was open is not missed. While the stream cannot be had, the orders are read every few
seconds instead (the fallback), and the stream is tried again with a growing wait. An order is passed on only
when it is newer than what was passed on before.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from oms.backoffice.models import Order
from oms.backoffice.services import ServiceError

log = logging.getLogger(__name__)

RETRY_SECONDS: Final = (0.5, 1.0, 2.0, 4.0, 5.0)  # waits before opening the stream again, the last repeated

OpenStream = Callable[[], AbstractAsyncContextManager[AsyncIterator[str]]]
ReadOrders = Callable[[Iterable[str]], Awaitable[list[Order]]]


@dataclass(frozen=True)
class ServerEvent:
    """One server-sent event: its name (`message` when it has none) and its data."""

    name: str
    data: str


async def server_events(lines: AsyncIterator[str]) -> AsyncIterator[ServerEvent]:
    """The events of a `text/event-stream` given line by line (comments, ids and `retry` skipped)."""
    name, data = "message", list[str]()
    async for line in lines:
        if not line:
            if data:
                yield ServerEvent(name, "\n".join(data))
            name, data = "message", []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line.startswith("event:"):
            name = line[6:].strip()


def order_of(event: ServerEvent) -> Order | None:
    """The order an `order` event carries (None: another event, or one the back office cannot read)."""
    if event.name != "order":
        return None
    try:
        return Order.of(json.loads(event.data, parse_float=Decimal))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignored an order event that cannot be read: %s", exc)
        return None


class Followed:
    """The orders a page follows, and what it was last told of each."""

    def __init__(self, ids: Iterable[str]) -> None:
        self.waiting = set(ids)  # still PENDING as far as the page knows
        self._told: dict[str, Order] = {}

    def news(self, order: Order) -> bool:
        """True when `order` is followed and newer than what the page was last told (then it is told)."""
        if order.id not in self.waiting:
            return False
        told = self._told.get(order.id)
        if told is not None and (
            order.updated_at < told.updated_at
            or (order.updated_at, order.status, order.funds_reserved)
            == (told.updated_at, told.status, told.funds_reserved)
        ):
            return False
        self._told[order.id] = order
        if not order.pending:
            self.waiting.discard(order.id)
        return True


async def follow_orders(
    ids: Iterable[str], open_stream: OpenStream, read: ReadOrders, retry: tuple[float, ...] = RETRY_SECONDS
) -> AsyncIterator[Order]:
    """Each change of the orders `ids` until none is PENDING: from the stream while it is open, else read."""
    followed = Followed(ids)
    attempt = 0
    while followed.waiting:
        try:
            async with open_stream() as lines:
                fresh = True
                async for event in server_events(lines):
                    if fresh:  # the service listens now: anything before is in the orders as read now
                        fresh, attempt = False, 0
                        for order in await read(followed.waiting):
                            if followed.news(order):
                                yield order
                    changed = order_of(event)
                    if changed is not None and followed.news(changed):
                        yield changed
                    if not followed.waiting:
                        return
        except ServiceError as exc:
            log.info("order stream unavailable (%s); reading the orders instead", exc.message)
        for order in await read(followed.waiting):  # the stream ended or cannot be had
            if followed.news(order):
                yield order
        await asyncio.sleep(retry[min(attempt, len(retry) - 1)])
        attempt += 1
