"""The chaos suite's record of the quotes: a mirror of OMS_MARKET that keeps every quote, where OMS_MARKET
keeps each symbol's last one only."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

from nats.js import JetStreamContext

from oms.chaos.market import QUOTE_RECORD, QuoteTap, record_quotes, recorded_quotes
from oms.kernel.market import MARKET_STREAM, Quote, quote_subject
from oms.kernel.money import Side
from oms.kernel.nats_access import NatsAccess


def quote(symbol: str, sequence: int, bid: str) -> Quote:
    bid_price = Decimal(bid)
    return Quote(
        symbol=symbol, bid=bid_price, ask=bid_price + Decimal("0.02"), last=bid_price,
        time=datetime.now(UTC), sequence=sequence,
    )  # fmt: skip


async def publish(js: JetStreamContext, *quotes: Quote) -> None:
    for q in quotes:
        await js.publish(
            quote_subject(q.symbol), q.model_dump_json().encode(), headers={"Nats-Msg-Id": q.msg_id}
        )


async def test_the_record_keeps_every_quote_the_market_stream_replaced(
    js: JetStreamContext, operator: NatsAccess
) -> None:
    await publish(js, quote("AAPL", 1, "100.00"))  # before the record: its last value is copied
    await record_quotes(operator)
    try:
        await publish(js, quote("AAPL", 2, "100.01"), quote("MSFT", 1, "50.00"), quote("AAPL", 3, "100.05"))
        await publish(js, quote("AAPL", 5, "100.07"))  # sequence 4 never reached the broker: a gap
        market = await js.stream_info(MARKET_STREAM)
        assert market.state.messages == 2  # OMS_MARKET: each symbol's last quote only
        for _ in range(100):
            if (await js.stream_info(QUOTE_RECORD)).state.messages == 5:
                break
            await asyncio.sleep(0.05)
        history = await recorded_quotes(operator)
        assert sorted((q.symbol, q.sequence) for q in history.quotes) == [
            ("AAPL", 1), ("AAPL", 2), ("AAPL", 3), ("AAPL", 5), ("MSFT", 1),
        ]  # fmt: skip
        now = datetime.now(UTC)
        assert history.quoted("AAPL", Side.BUY, Decimal("100.03"), now)  # sequence 2's ask
        assert history.quoted("AAPL", Side.SELL, Decimal("100.01"), now)
        assert not history.quoted("AAPL", Side.SELL, Decimal("100.03"), now)  # an ask, never a bid
        assert (history.gaps("AAPL"), history.gaps("MSFT")) == (1, 0)
    finally:
        await js.delete_stream(QUOTE_RECORD)


async def test_what_the_mirror_missed_the_tap_heard(js: JetStreamContext, operator: NatsAccess) -> None:
    await record_quotes(operator)
    tap = QuoteTap()
    await tap.start(operator)
    try:
        await publish(js, quote("AAPL", 1, "100.00"), quote("AAPL", 2, "100.01"), quote("AAPL", 3, "100.02"))
        for _ in range(100):
            if (await js.stream_info(QUOTE_RECORD)).state.messages == 3 and len(tap.heard) == 3:
                break
            await asyncio.sleep(0.05)
        await js.delete_msg(QUOTE_RECORD, 2)  # as a mirror that lagged while a server was down misses one
        await tap.stop()
        history = await recorded_quotes(operator, heard=tap.quotes())
        assert sorted((q.symbol, q.sequence) for q in history.quotes) == [
            ("AAPL", 1),
            ("AAPL", 2),
            ("AAPL", 3),
        ]
        assert history.gaps("AAPL") == 0
        assert history.quoted("AAPL", Side.SELL, Decimal("100.01"), datetime.now(UTC))
    finally:
        await tap.stop()
        await js.delete_stream(QUOTE_RECORD)
