"""Continuous pulling from a JetStream durable consumer.

nats-py's `fetch` asks the server for messages only when called and then waits for each message with a
timer of its own, which costs more than handling the message. Here pull requests stay outstanding: the
server pushes messages as they are stored, they wait in a buffer, and `take` hands over whatever has arrived
(the consumer's next batch) at once. Requests are topped up as credits are used; a request that ended
(expired, or the server or the connection went away) is noticed by its status message or by missing
heartbeats, and replaced.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import Final

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

CREDITS: Final = 256  # messages asked for and not yet taken: bounds what waits here, unacknowledged
EXPIRES: Final = 30.0  # seconds a pull request lives on the server
HEARTBEAT: Final = 1.0  # the server's idle heartbeat while a request waits
MISSED_HEARTBEATS: Final = 3  # silent this long: the requests are presumed gone (restart, reconnection)

_STATUS: Final = "Status"
_HEARTBEAT: Final = "100"
_PENDING: Final = "Nats-Pending-Messages"


class PullConsumer:
    """Keeps pull requests for `credits` messages outstanding on durable `consumer` of `stream`."""

    def __init__(self, nc: NatsClient, stream: str, consumer: str, credits: int = CREDITS) -> None:
        self._nc = nc
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._credits = credits
        self._buffer: deque[Msg] = deque()
        self._arrived = asyncio.Event()
        self._requested = 0  # asked for and neither delivered nor ended
        self._heard_at = time.monotonic()
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        self._subscription = await self._nc.subscribe(self._inbox, cb=self._receive)
        await self._top_up()

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None

    async def take(self, limit: int, max_wait: float) -> list[Msg]:
        """Up to `limit` messages that have arrived; waits at most `max_wait` for the first one."""
        if not self._buffer:
            self._arrived.clear()
            await self._top_up()
            try:
                await asyncio.wait_for(self._arrived.wait(), max_wait)
            except TimeoutError:
                return []
        taken = [self._buffer.popleft() for _ in range(min(limit, len(self._buffer)))]
        await self._top_up()
        return taken

    async def _receive(self, msg: Msg) -> None:
        self._heard_at = time.monotonic()
        status = (msg.headers or {}).get(_STATUS)
        if status is None:
            self._requested = max(0, self._requested - 1)
            self._buffer.append(msg)
            self._arrived.set()
            return
        if status == _HEARTBEAT:
            return
        # 404/408/409: a request ended (no messages, expired, consumer changed); its unused credits are gone.
        unused = (msg.headers or {}).get(_PENDING)
        self._requested = max(0, self._requested - int(unused)) if unused else 0
        await self._top_up()

    async def _top_up(self) -> None:
        if self._subscription is None:
            return
        silent = time.monotonic() - self._heard_at
        if self._requested and silent > MISSED_HEARTBEATS * HEARTBEAT:
            self._requested = 0  # the requests died with a connection or a server
        wanted = self._credits - self._requested - len(self._buffer)
        if wanted < self._credits // 2 or not self._nc.is_connected:
            return
        request = {
            "batch": wanted,
            "expires": int(EXPIRES * 1e9),
            "idle_heartbeat": int(HEARTBEAT * 1e9),
        }
        await self._nc.publish(self._next, json.dumps(request).encode(), reply=self._inbox)
        self._requested += wanted
        self._heard_at = time.monotonic()
