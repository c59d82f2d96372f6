"""Server-sent events: the wire form of one event, and a response that streams them with keep-alives.

A client that falls too far behind is let go (its stream ends); browsers' EventSource reconnects on its own
after the `retry` interval and starts again from the current state, which is cheaper than buffering for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Final

import simplejson
from starlette.responses import StreamingResponse

KEEP_ALIVE_SECONDS: Final = 15.0
RETRY_MILLISECONDS: Final = 1000


def sse_event(data: Any, *, event: str | None = None, event_id: str | None = None) -> bytes:
    """One event: `data` as one line of JSON (decimals as exact numbers)."""
    lines = [f"event: {event}"] if event else []
    if event_id:
        lines.append(f"id: {event_id}")
    lines.append(f"data: {simplejson.dumps(data, use_decimal=True, separators=(',', ':'), default=str)}")
    return ("\n".join(lines) + "\n\n").encode()


async def with_keep_alive(
    events: AsyncIterator[bytes], every: float = KEEP_ALIVE_SECONDS
) -> AsyncIterator[bytes]:
    """`events`, preceded by the reconnection delay and with a comment line whenever nothing was sent for
    `every` seconds (so proxies and clients see a live connection)."""
    yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
    pending = asyncio.ensure_future(anext(events))
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=every)
            if not done:
                yield b": keep-alive\n\n"
                continue
            try:
                yield pending.result()
            except StopAsyncIteration:
                return
            pending = asyncio.ensure_future(anext(events))
    finally:
        pending.cancel()


class EventStreamResponse(StreamingResponse):
    """`text/event-stream`, never cached or buffered by a proxy."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes]) -> None:
        super().__init__(
            with_keep_alive(events), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
