"""Where quotes come from, behind one interface: `PriceSource.prices(market)` yields batches of `Prices`;
the feed (market/feed.py) stamps each with its time and sequence, checks it against its instrument and
publishes it. `sim` and `replay` are here; an external feed is one more class with a `prices` method (e.g.
reading a vendor's socket and yielding what it says), chosen in `source_for`.
"""

from __future__ import annotations

import asyncio
import csv
import io
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Final, Protocol

from oms.kernel.market import Quote
from oms.kernel.money import InvalidValue, parse_positive, parse_symbol
from oms.kernel.settings import QuoteSource, Settings
from oms.market.domain import Listing
from oms.market.sim import Prices, RandomWalk

WAKE_SECONDS: Final = 0.02  # the sim's batches: at most 50 a second, whatever the rate
REPLAY_COLUMNS: Final = ("time", "symbol", "bid", "ask", "last")


class Listed(Protocol):
    """What a source sees of the market."""

    def quoted(self) -> list[Listing]:
        """The instruments to quote now (listed and OPEN), by symbol."""

    def latest(self, symbol: str) -> Quote | None:
        """The symbol's latest published quote."""


class PriceSource(Protocol):
    def prices(self, market: Listed) -> AsyncIterator[list[Prices]]: ...


class SimSource:
    """Each quoted symbol's random walk, `quotes_per_second` steps a second each, the symbols in turn."""

    def __init__(
        self,
        seed: int,
        quotes_per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.seed = seed
        self.rate = quotes_per_second
        self._clock = clock
        self._sleep = sleep
        self._walks: dict[str, tuple[Listing, RandomWalk]] = {}

    async def prices(self, market: Listed) -> AsyncIterator[list[Prices]]:
        # Each run (the feed takes the turn) walks on from the latest published quotes, not from where this
        # one left off: another market replica may have quoted meanwhile.
        self._walks.clear()
        owed, turn, woke = 0.0, 0, self._clock()
        while True:
            # Woken by the rate of all symbols together (the symbol's own rate would batch a second's worth
            # only every 1/rate seconds: at 0.2 a second, a fifth of the quotes asked for).
            await self._sleep(max(WAKE_SECONDS, 1 / max(self.rate * len(market.quoted()), 1.0)))
            now, listings = self._clock(), market.quoted()
            total_rate = self.rate * len(listings)
            # Owed quotes build up while the broker is away; no more than a second's worth are made up.
            owed = min(owed + (now - woke) * total_rate, max(total_rate, 1.0))
            woke, due = now, int(owed)
            if not listings or not due:
                continue
            owed -= due
            batch = [self._step(listings[(turn + n) % len(listings)], market) for n in range(due)]
            turn = (turn + due) % len(listings)
            yield batch

    def _step(self, listing: Listing, market: Listed) -> Prices:
        known = self._walks.get(listing.symbol)
        if known is None or _moves_differently(known[0], listing):
            latest = market.latest(listing.symbol)
            moved_on = (
                known is None or known[0].instrument.reference_price == listing.instrument.reference_price
            )
            walk = RandomWalk(
                listing.symbol,
                listing.instrument.reference_price,
                listing.daily_volatility,
                seed=self.seed,
                steps_per_second=self.rate,
                start=latest.last if latest is not None and moved_on else None,
            )
            known = self._walks[listing.symbol] = (listing, walk)
        return known[1].step(listing.instrument)


def _moves_differently(before: Listing, now: Listing) -> bool:
    return (before.instrument.reference_price, before.daily_volatility) != (
        now.instrument.reference_price,
        now.daily_volatility,
    )


class ReplayError(ValueError):
    """A replay file that cannot be read; the message names the line."""


@dataclass(frozen=True, slots=True)
class ReplayRow:
    """One recorded quote, `offset` seconds after the file's first."""

    offset: float
    prices: Prices


def read_replay(text: str) -> list[ReplayRow]:
    """The rows of a replay CSV: `time,symbol,bid,ask,last` with a header; `time` in seconds from the start
    or as ISO-8601 timestamps; rows in time order."""
    reader = csv.reader(io.StringIO(text))
    header = [c.strip().lower() for c in next(reader, [])]
    if tuple(header) != REPLAY_COLUMNS:
        raise ReplayError(f"line 1: the header must be {','.join(REPLAY_COLUMNS)}, not {','.join(header)}")
    rows: list[ReplayRow] = []
    first: datetime | float | None = None
    for line, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        try:
            when, prices = _row(cells)
            first = when if first is None else first
            offset = _seconds_between(first, when)
        except (InvalidValue, ValueError) as exc:
            raise ReplayError(f"line {line}: {exc}") from None
        if rows and offset < rows[-1].offset:
            raise ReplayError(f"line {line}: rows must be in time order")
        rows.append(ReplayRow(offset, prices))
    return rows


def _row(cells: list[str]) -> tuple[datetime | float, Prices]:
    if len(cells) != len(REPLAY_COLUMNS):
        raise ValueError(f"{len(cells)} columns, not {len(REPLAY_COLUMNS)}")
    when_text, symbol, bid, ask, last = (c.strip() for c in cells)
    prices = Prices(parse_symbol(symbol), parse_positive(bid), parse_positive(ask), parse_positive(last))
    if prices.bid >= prices.ask:
        raise ValueError(f"the bid {bid} must be below the ask {ask}")
    return _time(when_text), prices


def _time(text: str) -> datetime | float:
    try:
        seconds = float(Decimal(text))
    except ArithmeticError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"the time {text} is not a number of seconds")
        return seconds
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError(f"the time {text} needs a time zone (e.g. 2026-12-06T10:00:00Z)")
    return when


def _seconds_between(first: datetime | float, when: datetime | float) -> float:
    if isinstance(first, datetime) and isinstance(when, datetime):
        return (when - first).total_seconds()
    if isinstance(first, float) and isinstance(when, float):
        return when - first
    raise ValueError("times must all be seconds or all be timestamps")


class ReplaySource:
    """The rows of a replay file at their recorded pace times `speed` (0: as fast as they are taken)."""

    def __init__(self, rows: list[ReplayRow], speed: float) -> None:
        self.rows = rows
        self.speed = speed

    async def prices(self, market: Listed) -> AsyncIterator[list[Prices]]:
        started = time.monotonic()
        batch: list[Prices] = []
        for n, row in enumerate(self.rows):
            batch.append(row.prices)
            if n + 1 < len(self.rows) and self.rows[n + 1].offset == row.offset:
                continue  # rows of the same moment go together
            if self.speed:
                await asyncio.sleep(max(0.0, started + row.offset / self.speed - time.monotonic()))
            yield batch
            batch = []


def source_for(settings: Settings) -> PriceSource:
    """The source OMS_MARKET_SOURCE names (ReplayError when the replay file cannot be read)."""
    if settings.market_source is QuoteSource.REPLAY:
        path = settings.market_replay_file
        if path is None:
            raise ReplayError("OMS_MARKET_SOURCE=replay needs OMS_MARKET_REPLAY_FILE")
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ReplayError(f"cannot read {path}: {exc.strerror}") from None
        return ReplaySource(read_replay(text), settings.market_replay_speed)
    return SimSource(settings.market_seed, settings.market_quotes_per_second)
