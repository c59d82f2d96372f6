"""Whose turn it is to quote: of the market service's replicas, only the one holding a PostgreSQL advisory
lock on the market database runs the quote source (two random walks would interleave on the broker).

The lock belongs to the holder's database session: when the holder dies, the server ends the session and
frees the lock at once, and a standby, asking every second, takes it and goes on from the last quotes on the
broker (docs/decisions/023). Holding it, the feed also reads the instruments back from the database every few
seconds, as another replica may have changed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

import asyncpg

from oms.market import store
from oms.market.domain import Listing

log = logging.getLogger(__name__)

FEED_LOCK: Final = 0x6F6D735F66656564  # "oms_feed": the advisory lock's key
ASK_EVERY: Final = 1.0  # seconds between a standby's tries
READ_EVERY: Final = 2.0  # seconds between the holder's reads of the instruments
READ_TIMEOUT: Final = 5.0
LOST: Final = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class FeedTurn:
    """The feed lock of the market database at `url`."""

    def __init__(self, url: str, ask_every: float = ASK_EVERY, read_every: float = READ_EVERY) -> None:
        self._url = url
        self._ask_every = ask_every
        self._read_every = read_every

    async def wait(self, stop: asyncio.Event) -> asyncpg.Connection | None:
        """The session holding the lock, once this replica holds it; None if `stop` is set first."""
        waiting = False
        while not stop.is_set():
            try:
                session = await asyncpg.connect(self._url, timeout=5)
            except LOST as exc:
                log.warning("the feed lock cannot be asked for (%s); trying again", exc)
                await _sleep_unless(stop, self._ask_every)
                continue
            try:
                while not stop.is_set():
                    if await session.fetchval("SELECT pg_try_advisory_lock($1)", FEED_LOCK):
                        return session
                    if not waiting:
                        log.info("the feed stands by: another replica quotes")
                        waiting = True
                    await _sleep_unless(stop, self._ask_every)
            except LOST as exc:
                log.warning("the feed lock's session was lost (%s); asking again", exc)
            await session.close(timeout=2)
        return None

    async def read_while_held(self, session: asyncpg.Connection) -> list[Listing]:
        """The instruments, `read_every` seconds from now, through the holder's session; LOST errors when
        the session (and so the lock) is gone."""
        await asyncio.sleep(self._read_every)
        # Bounded: a server cut off without closing the connection must not keep a holder quoting for long.
        return await asyncio.wait_for(store.all_listings(session), READ_TIMEOUT)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
