"""The quote stream's events (server-sent): the latest quotes first, then each new one once, keep-alives while
nothing happens, and no listener left behind when the client goes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal as D

from oms.kernel.market import MarketBoard, Quote
from oms.kernel.sse import sse_event, with_keep_alive
from oms.market.api import quote_events


def quote(symbol: str, sequence: int) -> Quote:
    return Quote(
        symbol=symbol, bid=D("1.00"), ask=D("1.02"), last=D("1.01"), time=datetime.now(UTC), sequence=sequence
    )


async def test_the_stream_sends_the_latest_then_new_quotes_of_its_symbols_once() -> None:
    board = MarketBoard()
    await board.publish(quote("AAPL", 4))
    await board.publish(quote("MSFT", 9))
    events = quote_events(board, {"AAPL"})
    first = await anext(events)
    assert first.startswith(b"event: quote\nid: AAPL:4\ndata: {")
    assert b'"bid":1.00,' in first  # an exact JSON number
    reading = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)
    await board.publish(quote("MSFT", 10))  # not asked for
    await board.publish(quote("AAPL", 5))
    assert b"id: AAPL:5\n" in await reading
    await events.aclose()
    await board.publish(quote("AAPL", 6))  # nobody listens any more: nothing is queued for a gone client
    assert board._listeners == []


async def test_keep_alives_fill_the_silence_and_the_stream_ends_with_its_events() -> None:
    async def slow() -> AsyncIterator[bytes]:
        await asyncio.sleep(0.05)
        yield sse_event({"n": 1}, event="x")

    sent = [chunk async for chunk in with_keep_alive(slow(), every=0.01)]
    assert sent[0] == b"retry: 1000\n\n"
    assert b": keep-alive\n\n" in sent[1:-1]
    assert sent[-1] == b'event: x\ndata: {"n":1}\n\n'
