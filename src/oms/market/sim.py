"""The `sim` quote source: for each symbol a seeded random walk around its reference price.

The mid price follows a mean-reverting walk in log space (Ornstein-Uhlenbeck): each step's move has the
symbol's daily volatility scaled to the step (a trading day is 6.5 hours), and the pull back to the
reference price halves a deviation in about a trading day, so the price wanders as a real one does over a
day but stays around its reference over weeks. The bid and ask are on the tick grid around the mid, a few
ticks apart; the last trade is the mid on the grid, between them.

Each symbol has its own generator seeded by (OMS_MARKET_SEED, symbol): the same seed gives every symbol
the same path whatever else is listed, at any quote rate that gives the same steps.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Final

from oms.kernel.market import Instrument

TRADING_DAY_SECONDS: Final = 6.5 * 3600
REVERSION_PER_DAY: Final = math.log(2)  # a deviation from the reference halves in a trading day
MAX_SPREAD_TICKS: Final = 4


@dataclass(frozen=True, slots=True)
class Prices:
    """A source's word on one symbol: the best bid and ask and the last trade (the feed adds the time and
    the sequence, and checks them)."""

    symbol: str
    bid: Decimal
    ask: Decimal
    last: Decimal


class RandomWalk:
    """One symbol's seeded walk; `step` gives its next prices, `steps_per_second` steps a second."""

    def __init__(
        self,
        symbol: str,
        reference: Decimal,
        daily_volatility: Decimal,
        *,
        seed: int,
        steps_per_second: float,
        start: Decimal | None = None,
    ) -> None:
        self._random = random.Random(f"{seed}:{symbol}")  # noqa: S311  (a simulation, not a secret)
        self._anchor = math.log(reference)
        self._log_mid = math.log(start or reference)
        step_days = 1 / (steps_per_second * TRADING_DAY_SECONDS)
        self._keep = math.exp(-REVERSION_PER_DAY * step_days)  # of the deviation, per step
        self._sigma = float(daily_volatility) * math.sqrt(step_days)
        self.symbol = symbol

    def step(self, instrument: Instrument) -> Prices:
        """The next prices, on `instrument`'s tick grid: bid < ask, both at least one tick."""
        deviation = (self._log_mid - self._anchor) * self._keep
        self._log_mid = self._anchor + deviation + self._sigma * self._random.gauss()
        tick = instrument.tick_size
        spread = min(1 + int(abs(self._random.gauss()) * 1.5), MAX_SPREAD_TICKS)
        mid = Decimal(math.exp(self._log_mid))
        lowest = (mid / tick - Decimal(spread) / 2).to_integral_value(rounding=ROUND_FLOOR)
        bid = max(lowest, Decimal(1)) * tick
        ask = bid + spread * tick
        last = min(max((mid / tick).to_integral_value(rounding=ROUND_HALF_EVEN) * tick, bid), ask)
        return Prices(self.symbol, bid, ask, last)
