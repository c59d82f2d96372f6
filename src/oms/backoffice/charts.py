"""Small charts, drawn on the server as SVG geometry (no chart library, nothing from a CDN): orders per
minute by status, and a balance over time rebuilt from the ledger. Pure functions: data in, shapes out."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from oms.backoffice.amounts import money
from oms.backoffice.models import Balance, LedgerEntry, Order

LEFT, RIGHT, TOP, BOTTOM = 52, 12, 12, 28  # margins around the plot, room for the axis labels
STATUSES = ("MATCHED", "CANCELED", "PENDING")  # stacked bottom to top
MIN_SPAN = timedelta(seconds=30)  # the shortest time a balance chart spans (one deposit a moment ago)
TIME_TICKS = 5  # labels on a balance chart's time axis


@dataclass(frozen=True)
class Frame:
    """The SVG canvas (viewBox units) and where the plot sits in it."""

    width: int
    height: int

    @property
    def left(self) -> int:
        return LEFT

    @property
    def right(self) -> int:
        return self.width - RIGHT

    @property
    def bottom(self) -> int:
        return self.height - BOTTOM

    @property
    def plot_width(self) -> int:
        return self.right - self.left

    @property
    def plot_height(self) -> int:
        return self.bottom - TOP


BAR_FRAME = Frame(960, 240)  # a page-wide chart
LINE_FRAME = Frame(640, 220)  # a chart in half a page


@dataclass(frozen=True)
class Tick:
    position: float  # y for the value axis, x for the time axis
    label: str


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    status: str
    count: int
    minute: str


@dataclass(frozen=True)
class BarChart:
    frame: Frame
    bars: list[Bar]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    totals: dict[str, int]  # orders in the window, by status
    minutes: int


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str


@dataclass(frozen=True)
class LineChart:
    frame: Frame
    total_path: str  # SVG polyline points, as a step line
    usable_path: str
    points: list[Point]  # one per ledger entry, for the dots and their tooltips
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    asset: str

    @property
    def empty(self) -> bool:
        return not self.points


def nice_ceiling(value: float, steps: tuple[float, ...] = (1, 2, 2.5, 5, 10)) -> float:
    """The smallest of `steps` × 10^k at or above `value` (a round top for an axis)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in steps if step * power >= value)


def count_ceiling(value: int, intervals: int = 4) -> int:
    """A round top for an axis of counts whose `intervals` ticks all fall on whole numbers."""
    return intervals * max(1, int(nice_ceiling(value / intervals, (1, 2, 5, 10))))


def compact(value: float) -> str:
    """A short axis label: 950, 12.5k, 3M."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.1f}".rstrip("0").rstrip(".") + suffix
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _value_ticks(frame: Frame, top: float, intervals: int = 4) -> list[Tick]:
    return [
        Tick(frame.bottom - frame.plot_height * i / intervals, compact(top * i / intervals))
        for i in range(intervals + 1)
    ]


@dataclass(frozen=True)
class Scale:
    """A value axis: from `low` to `high` in `step`s (round numbers, 2 to 6 of them)."""

    low: float
    high: float
    step: float

    @property
    def intervals(self) -> int:
        return round((self.high - self.low) / self.step)

    def ticks(self, frame: Frame) -> list[Tick]:
        n = self.intervals
        return [
            Tick(frame.bottom - frame.plot_height * i / n, compact(self.low + self.step * i))
            for i in range(n + 1)
        ]


def value_scale(smallest: float, largest: float) -> Scale:
    """Round bounds just around the values: from 0 unless every value lies well above it (then the range's
    own round floor), up to the first round step at or above the largest (251k → 300k, not 500k)."""
    largest = max(largest, 0.0)
    if largest <= 0:
        return Scale(0.0, 1.0, 0.25)
    floor_at_zero = smallest <= 0 or smallest < largest / 2
    spread = largest if floor_at_zero else largest - smallest
    for power in range(math.floor(math.log10(spread)) - 1 if spread > 0 else -1, 40):
        for mantissa in (1, 2, 2.5, 5):
            step = mantissa * 10.0**power
            low = 0.0 if floor_at_zero else math.floor(smallest / step) * step
            high = max(math.ceil(largest / step) * step, low + step)
            if round((high - low) / step) <= 6:
                return Scale(low, high, step)
    return Scale(0.0, largest, largest / 4)  # not reached for finite values


def orders_per_minute(orders: Iterable[Order], now: datetime, minutes: int = 30) -> BarChart:
    """Orders created in each of the last `minutes` minutes, stacked by their status now."""
    frame = BAR_FRAME
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(minutes=minutes)
    counts: Counter[tuple[int, str]] = Counter()
    for order in orders:
        if start <= order.created_at < end:
            counts[(int((order.created_at - start).total_seconds() // 60), order.status)] += 1
    top = count_ceiling(max((sum(counts[(m, s)] for s in STATUSES) for m in range(minutes)), default=0))
    slot = frame.plot_width / minutes
    bars = []
    for m in range(minutes):
        base = float(frame.bottom)
        label = (start + timedelta(minutes=m)).strftime("%H:%M")
        for status in STATUSES:
            if count := counts[(m, status)]:
                height = count * frame.plot_height / top
                base -= height
                bars.append(
                    Bar(frame.left + (m + 0.1) * slot, base, slot * 0.8, height, status, count, label)
                )
    x_ticks = [
        Tick(frame.left + (m + 0.5) * slot, (start + timedelta(minutes=m)).strftime("%H:%M"))
        for m in range(0, minutes, max(1, minutes // 6))
    ]
    totals = {s: sum(c for (_, status), c in counts.items() if status == s) for s in STATUSES}
    return BarChart(frame, bars, _value_ticks(frame, top), x_ticks, totals, minutes)


def balance_history(
    entries: Sequence[LedgerEntry], current: Balance
) -> list[tuple[datetime, Decimal, Decimal]]:
    """(time, total, usable) after each entry, oldest first, rebuilt backwards from the current balance
    (so a ledger longer than the page still ends at the right figure). `entries` are newest first."""
    total, usable = current.total, current.usable
    history = []
    for entry in entries:
        history.append((entry.created_at, total, usable))
        total, usable = total - entry.delta_total, usable - entry.delta_usable
    return list(reversed(history))


def time_ticks(start: datetime, end: datetime, x: Callable[[datetime], float]) -> list[Tick]:
    """Evenly spaced labels over [start, end], as precise as the span needs (seconds, minutes, days)."""
    span = end - start
    label = "%H:%M:%S" if span < timedelta(minutes=10) else "%H:%M" if span < timedelta(days=2) else "%d %b"
    moments = [start + span * i / (TIME_TICKS - 1) for i in range(TIME_TICKS)]
    return [Tick(x(moment), moment.strftime(label)) for moment in moments]


def balance_over_time(entries: Sequence[LedgerEntry], current: Balance, now: datetime) -> LineChart:
    """A step chart of an asset's total and usable balance, one step per ledger entry, from just before the
    oldest entry to now: the time axis fits the data, the value axis the balances."""
    frame = LINE_FRAME
    if not entries:
        return LineChart(frame, "", "", [], _value_ticks(frame, 1.0), [], current.asset)
    history = balance_history(entries, current)
    oldest = entries[-1]
    before = (history[0][1] - oldest.delta_total, history[0][2] - oldest.delta_usable)
    first = history[0][0]
    span = max(now - first, MIN_SPAN)
    start, end = first - span * 0.08, max(now, first + span)
    seconds = (end - start).total_seconds()
    values = [float(v) for v in (*before, *(v for _, t, u in history for v in (t, u)))]
    scale = value_scale(min(values), max(values))

    def x(moment: datetime) -> float:
        return frame.left + frame.plot_width * (moment - start).total_seconds() / seconds

    def y(value: Decimal) -> float:
        return frame.bottom - frame.plot_height * (float(value) - scale.low) / (scale.high - scale.low)

    def steps(initial: Decimal, values: list[Decimal]) -> str:
        coords = [(x(start), y(initial))]
        for (moment, _, _), value in zip(history, values, strict=True):
            coords += [(x(moment), coords[-1][1]), (x(moment), y(value))]
        coords.append((x(end), coords[-1][1]))
        return " ".join(f"{a:.1f},{b:.1f}" for a, b in coords)

    points = [
        Point(
            x(moment),
            y(total),
            f"{moment:%Y-%m-%d %H:%M:%S} UTC: total {money(total)}, usable {money(usable)}",
        )
        for moment, total, usable in history
    ]
    return LineChart(
        frame,
        steps(before[0], [t for _, t, _ in history]),
        steps(before[1], [u for _, _, u in history]),
        points,
        scale.ticks(frame),
        time_ticks(start, end, x),
        current.asset,
    )


PRICE_FRAME = Frame(960, 280)  # a symbol's price chart, page-wide


@dataclass(frozen=True, slots=True)
class QuotePoint:
    """One quote as a price chart needs it."""

    time: datetime
    bid: Decimal
    ask: Decimal
    last: Decimal


@dataclass(frozen=True)
class PriceChart:
    frame: Frame
    last_path: str  # SVG polyline points
    bid_path: str
    ask_path: str
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    symbol: str
    latest: QuotePoint | None
    count: int  # quotes drawn

    @property
    def empty(self) -> bool:
        return self.latest is None


def price_chart(symbol: str, points: Sequence[QuotePoint], now: datetime) -> PriceChart:
    """Last, bid and ask of `symbol` over its recent quotes (oldest first), from the first quote to now: the
    time axis fits the quotes (at least `MIN_SPAN`), the value axis their range (never from 0 for prices)."""
    frame = PRICE_FRAME
    if not points:
        return PriceChart(frame, "", "", "", _value_ticks(frame, 1.0), [], symbol, None, 0)
    start = points[0].time
    end = max(now, points[-1].time, start + MIN_SPAN)
    seconds = (end - start).total_seconds()
    prices = [float(p) for point in points for p in (point.bid, point.ask, point.last)]
    scale = value_scale(min(prices), max(prices))

    def x_of(moment: datetime) -> float:
        return frame.left + frame.plot_width * (moment - start).total_seconds() / seconds

    def y_of(price: Decimal) -> float:
        return frame.bottom - frame.plot_height * (float(price) - scale.low) / (scale.high - scale.low)

    def path(price: Callable[[QuotePoint], Decimal]) -> str:
        return " ".join(f"{x_of(p.time):.1f},{y_of(price(p)):.1f}" for p in points)

    return PriceChart(
        frame,
        path(lambda p: p.last),
        path(lambda p: p.bid),
        path(lambda p: p.ask),
        scale.ticks(frame),
        time_ticks(start, end, x_of),
        symbol,
        points[-1],
        len(points),
    )
