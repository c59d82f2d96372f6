"""The ticker strip: which symbols a user sees (what they hold or ordered, then a configured list, then the
first listed ones) and how each symbol's latest quote reads — its change from the reference price shown by an
arrow and a sign as well as a colour, so that it reads the same without colour. Pure functions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from oms.backoffice.amounts import money
from oms.kernel.market import Instrument, Quote
from oms.kernel.money import CASH

TICKER_SIZE: Final = 8
ARROWS: Final = {"up": "▲", "down": "▼", "flat": "■"}
WORDS: Final = {"up": "up", "down": "down", "flat": "unchanged"}
HUNDREDTH: Final = Decimal("0.01")


def ticker_symbols(
    listed: Collection[str],
    *,
    held: Iterable[str] = (),
    ordered: Iterable[str] = (),
    configured: Iterable[str] = (),
    size: int = TICKER_SIZE,
) -> list[str]:
    """Up to `size` listed symbols, each once: those held first, then those ordered (most recent or most
    active first), then the configured ones, then the first listed (alphabetically) to fill the strip."""
    chosen: dict[str, None] = {}
    for source in (held, ordered, configured, sorted(listed)):
        for symbol in source:
            if len(chosen) >= size:
                return list(chosen)
            if symbol != CASH and symbol in listed:
                chosen[symbol] = None
    return list(chosen)


def most_active(assets: Iterable[str]) -> list[str]:
    """Symbols by how many of `assets` (e.g. the assets of recent orders) name them, most first; ties in the
    order they first appear."""
    counts = Counter(assets)
    return sorted(counts, key=lambda symbol: -counts[symbol])


def configured_symbols(text: str) -> list[str]:
    """The symbols of a comma-separated setting (`OMS_BACKOFFICE_TICKER`), upper-cased, blanks dropped."""
    return [part.strip().upper() for part in text.split(",") if part.strip()]


@dataclass(frozen=True)
class TickerItem:
    """One symbol on the strip, as text ready to show."""

    symbol: str
    quoted: bool  # False: no quote yet (only the reference price is known)
    last: str = ""
    bid: str = ""
    ask: str = ""
    change: str = ""  # "+1.25", "-0.40", "0.00": from the reference price
    percent: str = ""  # "+0.50 %"
    direction: str = "flat"  # up | down | flat
    sequence: int = 0

    @property
    def arrow(self) -> str:
        return ARROWS[self.direction]

    @property
    def spoken(self) -> str:
        """What a screen reader says for the change ("up 1.25 (0.50 %)")."""
        if self.direction == "flat":
            return WORDS["flat"]
        return f"{WORDS[self.direction]} {self.change.lstrip('+-')} ({self.percent.lstrip('+-')})"


def ticker_item(symbol: str, quote: Quote | None, instrument: Instrument | None) -> TickerItem:
    """How `symbol` reads on the strip given its latest quote and its instrument (for the reference price)."""
    if quote is None:
        return TickerItem(symbol, quoted=False)
    change, percent = _change(quote.last, instrument.reference_price if instrument else None)
    direction = "up" if change > 0 else "down" if change < 0 else "flat"
    return TickerItem(
        symbol,
        quoted=True,
        last=money(quote.last),
        bid=money(quote.bid),
        ask=money(quote.ask),
        change=_signed(change, money),
        percent=_signed(percent, lambda p: f"{p:.2f}") + " %",
        direction=direction,
        sequence=quote.sequence,
    )


def _change(last: Decimal, reference: Decimal | None) -> tuple[Decimal, Decimal]:
    if reference is None or reference <= 0:
        return Decimal(0), Decimal(0)
    change = last - reference
    return change, (change * 100 / reference).quantize(HUNDREDTH)


def _signed(value: Decimal, form: Callable[[Decimal], str]) -> str:
    text = form(abs(value))
    return f"+{text}" if value > 0 else f"-{text}" if value < 0 else text
