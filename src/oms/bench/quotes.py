"""The bench as the system's quote source: it publishes quotes exactly as the market feed does — with the
feed's own broker identity (`market`, which may publish `oms.market.>` and nothing else), on
`oms.market.quote.<SYMBOL>`, each symbol's sequence one more than its last, deduplicated by
`<symbol>:<sequence>`, waiting for the broker's acknowledgements — so every service reads them as it reads
the feed's. Each quote's `time` is stamped just before it is published, as the feed stamps its own.

Only a system whose feed has nothing more to publish may be quoted this way (the bench's own system, whose
feed replays one opening quote per symbol): two publishers of one symbol would each number its quotes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

from oms.bench.market import Market
from oms.kernel.broker import JetStreamBroker
from oms.kernel.market import Quote
from oms.kernel.nats_access import NatsAccess
from oms.market.feed import quote_message

BATCH_SECONDS: Final = 0.02  # paced publishing: a batch every 20 ms at most (the feed's sim wakes as often)
WIGGLE_TICKS: Final = (0, 1, 0, -1)  # background quotes move around each symbol's opening quote


class QuotePublisher:
    """Publishes quotes of `market`'s symbols and keeps `market.quotes` the latest published."""

    def __init__(self, broker: JetStreamBroker, market: Market) -> None:
        self.broker = broker
        self.market = market
        self.published = 0
        self._base = dict(market.quotes)  # the background wiggles around these
        self._turn: dict[str, int] = {}

    @classmethod
    async def connect(cls, access: NatsAccess, market: Market) -> QuotePublisher:
        return cls(await JetStreamBroker.connect(access, once=True), market)

    async def close(self) -> None:
        await self.broker.close()

    def quote(self, symbol: str, bid: Decimal, ask: Decimal, last: Decimal | None = None) -> Quote:
        """The symbol's next quote, stamped now, its sequence one more than the latest (which it becomes:
        publish it before any other quote of the symbol)."""
        latest = self.market.quotes[symbol]
        quote = self.market.quotes[symbol] = Quote(
            symbol=symbol,
            bid=bid,
            ask=ask,
            last=latest.last if last is None else last,
            time=datetime.now(UTC),
            sequence=latest.sequence + 1,
        )
        return quote

    async def publish(self, *quotes: Quote) -> None:
        """Publish `quotes` (made by `quote`, in that order) and wait for their acknowledgements."""
        await self.broker.publish([quote_message(q) for q in quotes])
        self.published += len(quotes)

    def wiggle(self, symbol: str) -> Quote:
        """A background quote: the symbol's opening quote moved by 0, +1, 0 or -1 tick in turn (never
        crossing an order priced away from it, never leaving the band)."""
        turn = self._turn.get(symbol, 0)
        self._turn[symbol] = turn + 1
        base, tick = self._base[symbol], self.market.instruments[symbol].tick_size
        move = WIGGLE_TICKS[turn % len(WIGGLE_TICKS)] * tick
        if base.bid + move <= 0:
            move = Decimal(0)
        return self.quote(symbol, base.bid + move, base.ask + move, base.last + move)

    async def background(
        self,
        symbols: list[str],
        rate: Callable[[], float],
        stop: asyncio.Event,
        extra: Callable[[], list[Quote]] | None = None,
    ) -> None:
        """Wiggle quotes of `symbols` in turn, `rate()` quotes/s in all, until `stop`; `extra()` adds quotes
        of its own to each batch (probes). Quotes owed while a publish waited are made up, at most a
        second's worth."""
        owed, turn, woke = 0.0, 0, time.monotonic()
        while not stop.is_set() and symbols:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), BATCH_SECONDS)
            now = time.monotonic()
            owed = min(owed + (now - woke) * rate(), max(rate(), 1.0))
            woke, due = now, int(owed)
            owed -= due
            batch = [self.wiggle(symbols[(turn + n) % len(symbols)]) for n in range(due)]
            turn = (turn + due) % len(symbols)
            if extra is not None:
                batch += extra()
            if batch:
                await self.publish(*batch)
