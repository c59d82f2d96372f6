"""The market feed: publishes the instruments and the source's quotes on the broker (stream OMS_MARKET).

Instruments are published directly after their change commits, and all of them again whenever the feed
starts (docs/decisions/013): a change whose publication was cut short by a crash goes out at the restart,
and the stream keeps each instrument's last state for every reader. Quotes get their sequence here, one more
than the symbol's last one on the broker (read back at start, so a restart goes on where it stopped), are
checked against their instrument, and published with the broker's deduplication id `<symbol>:<sequence>`:
a retry after a lost acknowledgement is stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, Final

from prometheus_client import Counter, Gauge

from oms.kernel.broker import JetStreamBroker, Outgoing, PublishAborted
from oms.kernel.market import Instrument, MarketBoard, Quote, instrument_subject, quote_subject
from oms.kernel.market_view import MarketView
from oms.market.domain import Listing
from oms.market.sim import Prices
from oms.market.sources import PriceSource
from oms.market.turn import LOST, FeedTurn

log = logging.getLogger(__name__)

QUOTES = Counter("oms_market_quotes_published_total", "Quotes published on the broker")
REFUSED = Counter("oms_market_quotes_refused_total", "Quotes of the source not published", ["reason"])
INSTRUMENTS = Gauge("oms_market_instruments", "Instruments listed, by status", ["status"])
_POLL: Final = 0.5  # seconds between looks at `stop` while no instrument changes
HANDOVER: Final = 1.0  # seconds a feed that takes the turn waits before it quotes


def quote_message(quote: Quote) -> Outgoing:
    return Outgoing(quote_subject(quote.symbol), quote.model_dump_json().encode(), quote.msg_id)


def instrument_message(listing: Listing) -> Outgoing:
    payload = listing.instrument.model_dump_json().encode()
    return Outgoing(instrument_subject(listing.symbol), payload, listing.msg_id)


def refusal(prices: Prices, instrument: Instrument | None) -> str | None:
    """Why the source's `prices` are not a quote to publish (None: they are)."""
    if instrument is None:
        return "not listed"
    if not instrument.is_open:
        return "halted"
    if not 0 < prices.bid < prices.ask or prices.last <= 0:
        return "bid not below ask"
    if any(p % instrument.tick_size for p in (prices.bid, prices.ask, prices.last)):
        return "off the tick grid"
    return None


class Feed:
    """What the market service publishes, and the `Listed` market its source quotes."""

    def __init__(
        self,
        broker: JetStreamBroker,
        source: PriceSource,
        listings: list[Listing],
        turn: FeedTurn | None = None,
    ) -> None:
        self._broker = broker
        self._turn = turn  # None: this feed is the only one
        self._source = source
        self._listings = {listing.symbol: listing for listing in listings}
        self._open: list[Listing] | None = None
        self._latest: dict[str, Quote] = {}
        self._unpublished: dict[str, Listing] = dict(self._listings)  # all of them at start
        self._changed = asyncio.Event()
        self.listed = False  # every instrument published at least once: the broker holds the market
        self._count_instruments()

    # -- Listed (what the source sees) --------------------------------------------------------------------
    def quoted(self) -> list[Listing]:
        if self._open is None:
            self._open = [
                self._listings[s] for s in sorted(self._listings) if self._listings[s].instrument.is_open
            ]
        return self._open

    def latest(self, symbol: str) -> Quote | None:
        return self._latest.get(symbol)

    # -- instruments ----------------------------------------------------------------------------------
    def announce(self, listing: Listing) -> None:
        """A committed change of `listing`: quote by it from now on, and publish it."""
        known = self._listings.get(listing.symbol)
        if known is not None and known.version >= listing.version:
            return
        self._listings[listing.symbol] = self._unpublished[listing.symbol] = listing
        self._open = None
        self._changed.set()
        self._count_instruments()

    def _count_instruments(self) -> None:
        for status in ("OPEN", "HALTED"):
            count = sum(1 for x in self._listings.values() if x.instrument.status.value == status)
            INSTRUMENTS.labels(status).set(count)

    async def _publish_instruments(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._changed.clear()
            todo = dict(self._unpublished)
            if not todo:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), _POLL)
                continue
            await self._broker.publish([instrument_message(x) for x in todo.values()], give_up=stop.is_set)
            for symbol, listing in todo.items():
                if self._unpublished.get(symbol) is listing:
                    del self._unpublished[symbol]
            self.listed = self.listed or not self._unpublished

    # -- quotes ---------------------------------------------------------------------------------------
    def stamp(self, prices: Prices, now: datetime) -> Quote | None:
        """The next quote of the symbol from `prices`, or None (counted) when they may not be published."""
        listing = self._listings.get(prices.symbol)
        problem = refusal(prices, listing.instrument if listing else None)
        if problem is not None:
            REFUSED.labels(problem).inc()
            return None
        latest = self._latest.get(prices.symbol)
        quote = Quote(
            symbol=prices.symbol,
            bid=prices.bid,
            ask=prices.ask,
            last=prices.last,
            time=now,
            sequence=latest.sequence + 1 if latest else 1,
        )
        self._latest[prices.symbol] = quote
        return quote

    async def _publish_quotes(self, stop: asyncio.Event) -> None:
        async for batch in self._source.prices(self):
            now = datetime.now(UTC)
            quotes = [q for q in (self.stamp(p, now) for p in batch) if q is not None]
            if quotes:
                await self._broker.publish([quote_message(q) for q in quotes], give_up=stop.is_set)
                QUOTES.inc(len(quotes))
        log.info("the quote source has no more quotes")

    # -- running ---------------------------------------------------------------------------------------
    def resume_from(self, board: MarketBoard) -> None:
        """Go on from the latest quotes on the broker: their sequences, and (the sim) their prices."""
        for quote in board.quotes():
            known = self._latest.get(quote.symbol)
            if known is None or known.sequence < quote.sequence:
                self._latest[quote.symbol] = quote

    async def run(self, view: MarketView, stop: asyncio.Event) -> None:
        """Publish until `stop` is set: the instruments at once, the quotes once `view` has read the latest
        ones back from the broker."""
        tasks = [
            asyncio.create_task(_logged(self._publish_instruments(stop)), name="market-instruments"),
            asyncio.create_task(_logged(self._quote(view, stop)), name="market-quotes"),
        ]
        await stop.wait()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _quote(self, view: MarketView, stop: asyncio.Event) -> None:
        await view.wait_ready()
        if self._turn is None:
            self._resume(view)
            await self._publish_quotes(stop)
            return
        while not stop.is_set():
            session = await self._turn.wait(stop)
            if session is None:
                return
            try:
                # The last quotes of the replica that held the lock before reach this one's view meanwhile.
                await asyncio.sleep(HANDOVER)
                self._resume(view)
                await _first_to_end(self._publish_then_hold(stop), self._follow_listings(self._turn, session))
            finally:
                with contextlib.suppress(*LOST):
                    await session.close(timeout=2)

    async def _publish_then_hold(self, stop: asyncio.Event) -> None:
        """Publish the source's quotes; one that has no more (a replay played to its end) keeps the turn
        rather than giving it up and, taking it again, playing its file once more every second."""
        await self._publish_quotes(stop)
        await stop.wait()

    def _resume(self, view: MarketView) -> None:
        self.resume_from(view.board)
        log.info("the feed goes on from %d symbols' latest quotes", len(self._latest))

    async def _follow_listings(self, turn: FeedTurn, session: Any) -> None:
        """While this feed holds the turn: the instruments as the database has them (another replica may have
        changed one). Returns when the turn's session is lost: the lock with it."""
        while True:
            try:
                listings = await turn.read_while_held(session)
            except LOST as exc:
                log.warning("the feed lock's session was lost (%s): standing by", exc)
                return
            for listing in listings:
                self.announce(listing)


async def _first_to_end(*works: Coroutine[Any, Any, None]) -> None:
    """Run `works` until one of them ends (its error raised), then cancel the others."""
    tasks = [asyncio.create_task(work) for work in works]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    for task in done:
        task.result()


async def _logged(work: Coroutine[Any, Any, None]) -> None:
    try:
        await work
    except PublishAborted:
        pass  # stopping
    except Exception:
        log.exception("the market feed failed")
        raise
