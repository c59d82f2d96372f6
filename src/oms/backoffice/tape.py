"""The market as the back office follows it: one `MarketView` on the broker, as the `backoffice` identity
(which may read OMS_MARKET), shared by every page's live stream; and the recent quotes of the symbols that
someone watches, for their price charts (docs/decisions/017).

Only watched symbols keep a history — 524 symbols at a quote a second would otherwise hold a few hundred
thousand points for charts nobody opens. A symbol is watched while a page shows it (a chart or the ticker)
and for `WATCH_FOR` seconds after; at most `MAX_WATCHED` symbols at once (the least recently watched goes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Final

import nats.errors
from nats.aio.client import Client as NatsClient

from oms.backoffice.charts import QuotePoint
from oms.kernel.market import Instrument, Quote
from oms.kernel.market_view import MarketView
from oms.kernel.nats_access import NatsAccess, NatsConfigError, access_for, connect_nats
from oms.kernel.permissions import BACKOFFICE
from oms.kernel.settings import Settings

log = logging.getLogger(__name__)

HISTORY: Final = 600  # points kept per watched symbol
SPACING: Final = 0.5  # seconds between kept points: faster quotes replace the newest point
WATCH_FOR: Final = 600.0  # seconds a symbol keeps its history after a page last showed it
MAX_WATCHED: Final = 64
RETRY_SECONDS: Final = (0.5, 1.0, 2.0, 5.0)  # waits between attempts to reach the broker, the last repeated


class QuoteHistory:
    """The recent quotes of watched symbols, oldest first, at most one per `SPACING` seconds."""

    def __init__(self, *, size: int = HISTORY, spacing: float = SPACING, max_watched: int = MAX_WATCHED):
        self._size, self._spacing, self._max_watched = size, spacing, max_watched
        self._points: OrderedDict[str, deque[QuotePoint]] = OrderedDict()
        self._watched_at: dict[str, float] = {}

    def watch(self, symbols: Iterable[str], now: float | None = None) -> None:
        """Keep (or start keeping) the history of `symbols`; forget those nobody watched for a while."""
        now = time.monotonic() if now is None else now
        for symbol in symbols:
            self._watched_at[symbol] = now
            self._points.setdefault(symbol, deque(maxlen=self._size))
            self._points.move_to_end(symbol)
        stale = [s for s, at in self._watched_at.items() if now - at > WATCH_FOR]
        while len(self._points) - len(stale) > self._max_watched:
            stale.append(next(s for s in self._points if s not in stale))
        for symbol in stale:
            self._points.pop(symbol, None)
            self._watched_at.pop(symbol, None)

    def record(self, quote: Quote) -> None:
        """Add `quote` to its symbol's history if the symbol is watched."""
        points = self._points.get(quote.symbol)
        if points is None:
            return
        point = QuotePoint(quote.time, quote.bid, quote.ask, quote.last)
        if len(points) > 1 and (points[-1].time - points[-2].time).total_seconds() < self._spacing:
            points[-1] = point  # the newest point follows the market until it is `spacing` after the last
        else:
            points.append(point)

    def points(self, symbol: str) -> list[QuotePoint]:
        return list(self._points.get(symbol, ()))


class Tape:
    """The back office's view of the market: instruments, latest quotes and watched symbols' history."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.view = MarketView()
        self.history = QuoteHistory()
        self.view.listen(self._record)

    async def _record(self, quote: Quote) -> None:
        self.history.record(quote)

    def quote(self, symbol: str) -> Quote | None:
        return self.view.quote(symbol)

    def instrument(self, symbol: str) -> Instrument | None:
        return self.view.instrument(symbol)

    def watch(self, symbols: Iterable[str]) -> None:
        """Keep the history of `symbols` (one newly watched starts from its latest quote)."""
        symbols = list(symbols)
        self.history.watch(symbols)
        for symbol in symbols:
            if not self.history.points(symbol) and (latest := self.quote(symbol)) is not None:
                self.history.record(latest)

    def symbols(self) -> list[str]:
        """Every listed symbol, alphabetically."""
        return [i.symbol for i in self.view.board.instruments()]

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the market until `stop`: connect to the broker (trying again with a growing wait), then read
        it with the MarketView, which starts over from the last values after any gap or reconnection."""
        try:
            access = access_for(self._settings, BACKOFFICE)
        except NatsConfigError as exc:
            log.warning("no market data in the back office: %s", exc)
            return
        nc = await self._connect(access, stop)
        if nc is None:
            return
        try:
            await self.view.run(nc, stop)
        finally:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _connect(self, access: NatsAccess, stop: asyncio.Event) -> NatsClient | None:
        """A connection that reconnects for ever by itself once made; None if `stop` comes first."""
        attempt = 0
        while not stop.is_set():
            connecting = asyncio.ensure_future(connect_nats(access, name="oms-backoffice-market"))
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not connecting.done():
                connecting.cancel()
                return None
            try:
                return connecting.result()
            except (OSError, TimeoutError, nats.errors.Error) as exc:
                wait = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                log.warning("market data: cannot reach the broker (%s); trying again in %.1f s", exc, wait)
                attempt += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
        return None
