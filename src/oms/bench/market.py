"""The market as the bench sees it: the listed instruments and their latest quotes (from the market service's
API), and the prices the bench's orders name — marketable ones that execute at once, resting ones that a
quote must cross first — always on the instrument's tick grid, in whole lots and inside its price band, as
the order service demands (SPEC §3b).

When the bench starts its own system it is also the system's quote source: `oms up` replays one opening
quote per listed symbol (`write_opening_replay`), after which only the bench publishes quotes
(`oms.bench.quotes`), so that it knows each quote's time and which orders it crosses.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any, Final, TypeVar

from pydantic import BaseModel

from oms.kernel.market import Instrument, Quote
from oms.kernel.money import EXACT, Side
from oms.market.reference import US_TICK, shipped_references
from oms.market.sources import REPLAY_COLUMNS

# A marketable LIMIT order names a price this far beyond the quote (capped by the band): the quote may move
# between the bench reading it and the order service deciding, and the order must still execute at once.
MARKETABLE_MARGIN: Final = Decimal("0.02")
PREFERRED: Final = ("AAPL", "MSFT")  # in the workload when listed (familiar names in the results)
M = TypeVar("M", bound=BaseModel)


def on_grid(price: Decimal, tick: Decimal, *, up: bool) -> Decimal:
    ticks = EXACT.divide(price, tick).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR)
    return EXACT.multiply(ticks, tick)


@dataclass
class Market:
    """Instruments by symbol and the latest quote the bench knows of each."""

    instruments: dict[str, Instrument]
    quotes: dict[str, Quote]

    @classmethod
    def parse(cls, instruments: list[dict[str, Any]], quotes: list[dict[str, Any]]) -> Market:
        """From the market API's answers (numbers already exact Decimals)."""
        listed = {i["symbol"]: _known(Instrument, i) for i in instruments}
        return cls(listed, {q["symbol"]: _known(Quote, q) for q in quotes})

    def update(self, quotes: list[dict[str, Any]]) -> None:
        """Take the newer of these quotes (from the market API) as the latest."""
        for fields in quotes:
            quote = _known(Quote, fields)
            known = self.quotes.get(quote.symbol)
            if known is None or known.sequence < quote.sequence:
                self.quotes[quote.symbol] = quote

    def tradable(self) -> list[str]:
        """OPEN symbols with a quote, by symbol."""
        return sorted(s for s, i in self.instruments.items() if i.is_open and s in self.quotes)

    def pick(self, count: int, *, leave_out: set[str] | None = None, seed: int = 7) -> list[str]:
        """`count` tradable symbols (AAPL and MSFT first when there), the same ones for the same market."""
        leave_out = leave_out or set()
        tradable = [s for s in self.tradable() if s not in leave_out]
        first = [s for s in PREFERRED if s in tradable]
        rest = [s for s in tradable if s not in first]
        random.Random(seed).shuffle(rest)  # noqa: S311 - a choice of symbols, not a secret
        return (first + rest)[:count]

    def band(self, symbol: str) -> tuple[Decimal, Decimal]:
        """The lowest and highest limit the order service accepts now (around the last price)."""
        return self.instruments[symbol].band(self.quotes[symbol].last)

    def marketable_limit(self, symbol: str, side: Side) -> Decimal:
        """A limit that the current quote crosses with room to spare: a BUY above the ask, a SELL below
        the bid, on the grid and inside the band."""
        instrument, quote = self.instruments[symbol], self.quotes[symbol]
        low, high = self.band(symbol)
        if side is Side.BUY:
            wanted = on_grid(quote.ask * (1 + MARKETABLE_MARGIN), instrument.tick_size, up=False)
            return max(min(wanted, high), quote.ask)
        wanted = on_grid(quote.bid * (1 - MARKETABLE_MARGIN), instrument.tick_size, up=True)
        return min(max(wanted, low), quote.bid)

    def lot(self, symbol: str) -> Decimal:
        return self.instruments[symbol].lot_size


def _known(model: type[M], fields: dict[str, Any]) -> M:
    """`model` from an API answer, leaving out fields the model does not know (an API may grow)."""
    aliases = {f.alias or name for name, f in model.model_fields.items()}
    return model.model_validate({k: v for k, v in fields.items() if k in aliases})


def opening_rows() -> list[tuple[str, Decimal, Decimal, Decimal]]:
    """(symbol, bid, ask, last) for every symbol `oms up` lists: around its reference price, one tick
    each side (US equities trade in cents)."""
    rows = []
    for ref in shipped_references():
        tick = US_TICK
        last = ref.reference_price
        bid = last - tick if last > tick else last
        rows.append((ref.symbol, bid, bid + 2 * tick, last))
    return rows


def write_opening_replay(path: Path) -> Path:
    """A replay file of one opening quote per listed symbol, all at time 0."""
    lines = [",".join(REPLAY_COLUMNS)]
    lines += [f"0,{symbol},{bid},{ask},{last}" for symbol, bid, ask, last in opening_rows()]
    path.write_text("\n".join(lines) + "\n")
    return path
