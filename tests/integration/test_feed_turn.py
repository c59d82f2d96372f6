"""The market feed's turn (market/turn.py) on a real PostgreSQL: one replica holds it at a time, a standby
takes it as soon as the holder's session ends, and a holder whose session is lost learns it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest

from oms.kernel.db import migrate
from oms.market.turn import FEED_LOCK, LOST, FeedTurn
from tests.integration.conftest import eventually


@pytest.fixture
def market_url(make_database: Callable[[str], str]) -> str:
    url = make_database("market")
    migrate("market", url)
    return url


async def test_one_replica_quotes_and_the_standby_takes_over_when_its_session_ends(market_url: str) -> None:
    stop = asyncio.Event()
    first, second = FeedTurn(market_url, ask_every=0.1), FeedTurn(market_url, ask_every=0.1)
    holder = await first.wait(stop)
    assert holder is not None
    standby = asyncio.create_task(second.wait(stop))
    await asyncio.sleep(0.5)
    assert not standby.done()  # the lock is held: it stands by
    await holder.close()  # the holder dies: the server frees its lock with its session
    taker = await asyncio.wait_for(standby, 5)
    assert taker is not None
    await taker.close()


async def test_a_standby_stops_waiting_when_told_to(market_url: str) -> None:
    stop = asyncio.Event()
    holder = await FeedTurn(market_url).wait(stop)
    assert holder is not None
    standby = asyncio.create_task(FeedTurn(market_url, ask_every=0.1).wait(stop))
    stop.set()
    assert await asyncio.wait_for(standby, 5) is None
    await holder.close()


async def test_the_holder_reads_the_instruments_and_learns_when_its_session_is_lost(market_url: str) -> None:
    turn = FeedTurn(market_url, read_every=0.05)
    holder = await turn.wait(asyncio.Event())
    assert holder is not None
    assert await turn.read_while_held(holder) == []  # no instrument listed in this database yet
    admin = await asyncpg.connect(market_url)
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", holder.get_server_pid())
        with pytest.raises(LOST):
            await turn.read_while_held(holder)

        async def free() -> bool:  # the lock went with the session: another takes it at once
            return bool(await admin.fetchval("SELECT pg_try_advisory_lock($1)", FEED_LOCK))

        await eventually(free, what="the feed lock freed")
    finally:
        await admin.close()
