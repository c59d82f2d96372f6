"""Resting orders laid out as a ladder on one symbol, and the quotes that cross them one level at a time.

BUYs rest below the bid and SELLs above the ask, level after level a tick apart from `gap` ticks away, all
inside the price band; a level holds as many orders as it takes to fit them all in the band. A crossing
quote moves its ask down to the best BUY level left (or its bid up to the best SELL level left): it crosses
exactly that level's orders, which execute at that price; the next ordinary quote is back at the base.
Plain data, no I/O: the bench places the orders and publishes the quotes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal

from oms.kernel.market import Instrument, Quote
from oms.kernel.money import Side


@dataclass
class Level:
    """Orders resting at one limit price."""

    side: Side
    price: Decimal
    wanted: int  # orders to place at this price
    order_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Crossing:
    """A published quote that crosses one level: when it was stamped, its price, the orders it crosses."""

    side: Side
    price: Decimal
    quoted_at: float  # the quote's time (epoch seconds)
    order_ids: tuple[str, ...]


@dataclass
class Ladder:
    """The resting orders of one symbol by level, best first on each side."""

    instrument: Instrument
    base: Quote
    levels: dict[Side, list[Level]]
    _at: dict[tuple[Side, Decimal], Level] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._at = {(lv.side, lv.price): lv for levels in self.levels.values() for lv in levels}

    @classmethod
    def lay_out(
        cls, instrument: Instrument, base: Quote, orders: int, *, gap: int = 5, sell: bool = True
    ) -> Ladder:
        """`orders` resting orders (half BUY, half SELL; all BUY without `sell`) from `gap` ticks beyond the
        base quote outwards, inside the band around its last price; ValueError when the band is too narrow
        to hold any."""
        tick = instrument.tick_size
        low, high = instrument.band(base.last)
        room = {
            Side.BUY: int((base.bid - gap * tick - low) / tick) + 1,
            Side.SELL: int((high - base.ask - gap * tick) / tick) + 1,
        }
        if min(room.values()) < 1:
            raise ValueError(f"the band of {instrument.symbol} leaves no room {gap} ticks beyond the quote")
        levels: dict[Side, list[Level]] = {}
        sells = orders // 2 if sell else 0
        for side, count in ((Side.BUY, orders - sells), (Side.SELL, sells)):
            per_level = max(1, math.ceil(count / room[side]))
            step = -tick if side is Side.BUY else tick
            first = base.bid - gap * tick if side is Side.BUY else base.ask + gap * tick
            levels[side] = [
                Level(side, first + n * step, min(per_level, count - n * per_level))
                for n in range(math.ceil(count / per_level))
            ]
        return cls(instrument, base, levels)

    def places(self) -> list[tuple[Side, Decimal]]:
        """(side, limit) of every order to place, best levels first."""
        return [
            (lv.side, lv.price) for levels in self.levels.values() for lv in levels for _ in range(lv.wanted)
        ]

    def placed(self, side: Side, price: Decimal, order_id: str) -> None:
        """An order of the ladder was accepted."""
        self._at[side, price].order_ids.append(order_id)

    def resting_ids(self) -> list[str]:
        return [i for levels in self.levels.values() for level in levels for i in level.order_ids]

    def ordinary(self, turn: int) -> tuple[Decimal, Decimal]:
        """(bid, ask) of an ordinary quote: the base, or one tick above it every other turn (nothing is
        crossed: the best levels are `gap` ticks away)."""
        move = self.instrument.tick_size * (turn % 2)
        return self.base.bid + move, self.base.ask + move

    def next_crossing(self, side: Side) -> tuple[Decimal, Decimal, Level] | None:
        """(bid, ask) of a quote crossing the best level left on `side`, and that level (taken off the
        ladder); None when the side is empty."""
        levels = [level for level in self.levels[side] if level.order_ids]
        if not levels:
            return None
        level = levels[0]
        self.levels[side].remove(level)
        tick = self.instrument.tick_size
        if side is Side.BUY:
            return level.price - tick, level.price, level
        return level.price, level.price + tick, level
