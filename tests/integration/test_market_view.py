"""MarketView on a real NATS server: it reads each symbol's last instrument and quote from OMS_MARKET, follows
new quotes live, and after a restart of the reader or of the broker starts from the last values again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from nats.js import JetStreamContext

from oms.kernel.broker import JetStreamBroker, Outgoing
from oms.kernel.market import Instrument, InstrumentStatus, Quote, instrument_subject, quote_subject
from oms.kernel.market_view import MarketView, follow_market, read_market_message
from oms.kernel.nats_access import NatsAccess, connect_nats
from oms.kernel.permissions import MARKET
from oms.runtime.nats import EmbeddedNats
from tests.integration.conftest import eventually

AAPL = Instrument(
    symbol="AAPL", name="Apple Inc.", tick_size=D("0.01"), lot_size=D(1), reference_price=D(190)
)
MSFT = AAPL.model_copy(update={"symbol": "MSFT", "name": "Microsoft Corp", "reference_price": D(25)})


def quote(symbol: str, sequence: int, bid: str = "189.99", ask: str = "190.01") -> Quote:
    return Quote(
        symbol=symbol, bid=D(bid), ask=D(ask), last=D(bid), time=datetime.now(UTC), sequence=sequence
    )


def as_message(item: Quote | Instrument) -> Outgoing:
    if isinstance(item, Quote):
        return Outgoing(quote_subject(item.symbol), item.model_dump_json().encode(), item.msg_id)
    return Outgoing(
        instrument_subject(item.symbol), item.model_dump_json().encode(), f"i:{item.symbol}:{id(item)}"
    )


@pytest.fixture
async def feed(
    js: JetStreamContext, nats_identity: Callable[[str], NatsAccess]
) -> AsyncIterator[JetStreamBroker]:
    """A publisher with the market feed's own identity, on freshly made streams."""
    broker = await JetStreamBroker.connect(nats_identity(MARKET))
    yield broker
    await broker.close()


async def test_a_reader_gets_the_last_instrument_and_quote_of_every_symbol_at_once(
    feed: JetStreamBroker, nats_identity: Callable[[str], NatsAccess]
) -> None:
    await feed.publish(
        [as_message(i) for i in (AAPL, MSFT, quote("AAPL", 1), quote("AAPL", 2), quote("MSFT", 7))]
    )
    nc = await connect_nats(nats_identity("order"))
    try:
        async with follow_market(nc) as view:
            await view.wait_ready(10)
            assert view.instrument("MSFT") == MSFT
            assert view.quote("AAPL").sequence == 2  # type: ignore[union-attr]
            assert view.quote("MSFT").sequence == 7  # type: ignore[union-attr]
            assert view.board.instruments() == [AAPL, MSFT]
    finally:
        await nc.close()


async def test_a_reader_of_an_empty_stream_is_ready_and_hears_each_new_quote_once(
    feed: JetStreamBroker, nats_identity: Callable[[str], NatsAccess]
) -> None:
    nc = await connect_nats(nats_identity("backoffice"))
    heard: list[int] = []

    async def listener(q: Quote) -> None:
        heard.append(q.sequence)

    try:
        async with follow_market(nc) as view:
            await view.wait_ready(10)
            view.listen(listener)
            halted = AAPL.model_copy(update={"status": InstrumentStatus.HALTED})
            await feed.publish([as_message(AAPL), as_message(quote("AAPL", 1)), as_message(halted)])
            await feed.publish([as_message(quote("AAPL", 1))])  # a retry: dropped by its message id
            await feed.publish([as_message(quote("AAPL", 2))])

            async def both_heard() -> bool:
                return heard == [1, 2]

            await eventually(both_heard, within=10, what="quotes 1 and 2")
            assert view.instrument("AAPL") == halted
    finally:
        await nc.close()


async def test_a_view_made_before_its_connection_reads_once_run_on_it(
    feed: JetStreamBroker, nats_identity: Callable[[str], NatsAccess]
) -> None:
    """As a service hands a view to what needs market data at start, then runs it on its broker connection."""
    view = MarketView()
    assert view.instrument("AAPL") is None and not view.ready
    await feed.publish([as_message(AAPL), as_message(quote("AAPL", 5))])
    nc = await connect_nats(nats_identity("order"))
    stop = asyncio.Event()
    reading = asyncio.create_task(view.run(nc, stop))
    try:
        await view.wait_ready(10)
        assert view.instrument("AAPL") == AAPL and view.quote("AAPL").sequence == 5  # type: ignore[union-attr]
    finally:
        stop.set()
        await reading
        await nc.close()


async def test_a_view_restarted_reads_the_last_values_again(
    feed: JetStreamBroker, nats_identity: Callable[[str], NatsAccess]
) -> None:
    await feed.publish([as_message(AAPL), as_message(quote("AAPL", 1))])
    nc = await connect_nats(nats_identity("account"))
    try:
        async with follow_market(nc) as first:
            await first.wait_ready(10)
        await feed.publish([as_message(quote("AAPL", 2, bid="191.00", ask="191.02"))])
        async with follow_market(nc) as second:
            await second.wait_ready(10)
            assert second.quote("AAPL").sequence == 2  # type: ignore[union-attr]
            assert second.instrument("AAPL") == AAPL
    finally:
        await nc.close()


async def test_a_view_follows_the_market_through_a_broker_restart(
    feed: JetStreamBroker, nats_identity: Callable[[str], NatsAccess], nats_server: EmbeddedNats
) -> None:
    await feed.publish([as_message(AAPL), as_message(quote("AAPL", 1))])
    nc = await connect_nats(nats_identity("order"))
    try:
        async with follow_market(nc) as view:
            await view.wait_ready(10)
            nats_server.stop()
            nats_server.start()
            await feed.publish([as_message(quote("AAPL", 2))])  # retried until the broker is back

            async def second_quote() -> bool:
                latest = view.quote("AAPL")
                return latest is not None and latest.sequence == 2

            await eventually(second_quote, within=30, what="the quote published after the restart")
            assert view.restarts >= 1
    finally:
        await nc.close()


def test_only_market_data_on_its_own_subject_is_read() -> None:
    q = quote("AAPL", 3)
    assert read_market_message(quote_subject("AAPL"), q.model_dump_json().encode()) == q
    assert read_market_message(quote_subject("MSFT"), q.model_dump_json().encode()) is None  # not its own
    assert read_market_message(instrument_subject("AAPL"), AAPL.model_dump_json().encode()) == AAPL
    assert read_market_message(quote_subject("AAPL"), b'{"symbol": "AAPL", "bid": 1.5}') is None
    assert read_market_message("oms.market.other.AAPL", b"{}") is None
