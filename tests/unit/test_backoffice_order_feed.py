"""Following a page's PENDING orders (backoffice/order_feed.py) on streams of server-sent events held in
memory: changes pass on once and in order, a read after the stream (re)opens catches what happened while it
was shut, the orders are read while it cannot be had, and following ends when no order is PENDING."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from oms.backoffice.models import Order
from oms.backoffice.order_feed import ServerEvent, follow_orders, server_events
from oms.backoffice.services import ServiceError

T0 = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
A, B = "00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b"


def order(order_id: str, status: str = "PENDING", seconds: int = 0, reserved: bool = False) -> Order:
    return Order.of(
        {
            "id": order_id, "customerId": "c", "assetName": "AAPL", "orderSide": "BUY", "size": 1,
            "price": 10, "status": status, "fundsReserved": reserved,
            "createDate": T0.isoformat(), "updateDate": (T0 + timedelta(seconds=seconds)).isoformat(),
        }
    )  # fmt: skip


def sse(*orders: Order) -> list[str]:
    """The lines the order service sends for `orders` (with the keep-alive and retry lines around them)."""
    lines = ["retry: 1000", ""]
    for o in orders:
        data: dict[str, Any] = {
            "id": o.id, "customerId": o.customer_id, "assetName": o.asset, "orderSide": o.side,
            "size": str(o.size), "price": str(o.price), "status": o.status, "fundsReserved": o.funds_reserved,
            "createDate": o.created_at.isoformat(), "updateDate": o.updated_at.isoformat(),
        }  # fmt: skip
        lines += ["event: order", f"data: {json.dumps(data)}", "", ": keep-alive", ""]
    return lines


class Upstream:
    """The order service as the feed sees it: each opening of the stream plays the next script (a list of
    lines, or a ServiceError: it cannot be opened); reading an order answers its state now."""

    def __init__(self, scripts: list[list[str] | ServiceError], now: Iterable[Order]) -> None:
        self.scripts = scripts
        self.now = {o.id: o for o in now}
        self.opened = 0
        self.reads: list[set[str]] = []

    def open(self) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        @asynccontextmanager
        async def opening() -> AsyncIterator[AsyncIterator[str]]:
            script = self.scripts[min(self.opened, len(self.scripts) - 1)]
            self.opened += 1
            if isinstance(script, ServiceError):
                raise script
            yield _lines(script)

        return opening()

    async def read(self, ids: Iterable[str]) -> list[Order]:
        self.reads.append(set(ids))
        return [self.now[i] for i in sorted(ids) if i in self.now]


async def _lines(lines: list[str]) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def followed(ids: list[str], upstream: Upstream) -> list[tuple[str, str]]:
    found = follow_orders(ids, upstream.open, upstream.read, retry=(0.0,))
    return [(o.id, o.status) async for o in found]


async def test_server_events_are_read_from_their_lines() -> None:
    lines = ["retry: 1000", "", ": keep-alive", "", "event: order", "data: {", "data: }", "id: 7", ""]
    lines += ["data: plain", ""]
    assert [e async for e in server_events(_lines(lines))] == [
        ServerEvent("order", "{\n}"),
        ServerEvent("message", "plain"),
    ]


async def test_changes_of_followed_orders_pass_on_once_until_none_is_pending() -> None:
    stream = sse(
        order(A), order(B, seconds=1), order(A, seconds=2, reserved=True), order(A, seconds=2, reserved=True),
        order("00000000-0000-0000-0000-0000000000cc", "MATCHED", 3),  # not on the page
        order(A, "MATCHED", 4), order(B, "CANCELED", 5), order(B, "CANCELED", 5),
    )  # fmt: skip
    upstream = Upstream([stream], [order(A), order(B, seconds=1)])  # what the read after opening finds
    assert await followed([A, B], upstream) == [
        (A, "PENDING"), (B, "PENDING"), (A, "PENDING"), (A, "MATCHED"), (B, "CANCELED"),
    ]  # fmt: skip
    assert upstream.opened == 1


async def test_once_the_stream_opens_the_orders_are_read_again_and_an_older_state_is_not_passed_on() -> None:
    # A was matched before the stream listened: the read finds it; the snapshot's older state is dropped.
    upstream = Upstream([sse(order(B, seconds=1), order(A, seconds=0))], [order(A, "MATCHED", 3), order(B)])
    found = follow_orders([A, B], upstream.open, upstream.read, retry=(0.0,))
    assert [(o.id, o.status) for o in [await anext(found), await anext(found)]] == [
        (A, "MATCHED"),
        (B, "PENDING"),
    ]
    assert upstream.reads == [{A, B}]
    await found.aclose()


async def test_while_the_stream_cannot_be_had_the_orders_are_read_instead() -> None:
    down = ServiceError(503, "the order service cannot be reached")
    upstream = Upstream([down, down], [order(A, "MATCHED", 2)])
    assert await followed([A], upstream) == [(A, "MATCHED")]
    assert upstream.opened == 1 and upstream.reads == [{A}]


async def test_a_stream_that_ends_is_opened_again_after_a_read() -> None:
    upstream = Upstream([sse(order(A)), sse(order(A, "MATCHED", 2))], [order(A)])
    assert await followed([A], upstream) == [(A, "PENDING"), (A, "MATCHED")]
    assert upstream.opened == 2


async def test_nothing_to_follow_reads_nothing() -> None:
    upstream = Upstream([sse()], [])
    assert await followed([], upstream) == []
    assert upstream.opened == 0
