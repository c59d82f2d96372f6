"""The back office's charts: orders per minute by status, and a balance over time from the ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from oms.backoffice.charts import (
    BAR_FRAME,
    LINE_FRAME,
    balance_history,
    balance_over_time,
    count_ceiling,
    nice_ceiling,
    orders_per_minute,
    value_scale,
)
from oms.backoffice.models import Balance, LedgerEntry, Order

NOW = datetime(2025, 3, 1, 12, 30, 20, tzinfo=UTC)


def order(created: datetime, status: str) -> Order:
    return Order("id", "c", "AAPL", "BUY", Decimal(1), Decimal(1), status, None, True, created, created)


def entry(seq: int, at: datetime, total: str, usable: str) -> LedgerEntry:
    return LedgerEntry(
        seq, "TRY", "X", Decimal(total), Decimal(usable), None, None, at, Decimal(0), Decimal(0)
    )


@pytest.mark.parametrize(
    ("value", "top"), [(0, 1), (0.3, 0.5), (1, 1), (3, 5), (7, 10), (12, 20), (230, 250), (1001, 2000)]
)
def test_nice_ceiling_rounds_up_to_a_round_axis_top(value: float, top: float) -> None:
    assert nice_ceiling(value) == top


@pytest.mark.parametrize(("count", "top"), [(0, 4), (1, 4), (4, 4), (5, 8), (9, 20), (23, 40), (150, 200)])
def test_count_ceiling_puts_every_tick_on_a_whole_number(count: int, top: int) -> None:
    assert count_ceiling(count) == top
    assert top % 4 == 0


def test_orders_per_minute_stacks_each_minutes_orders_by_status() -> None:
    minute = NOW.replace(second=0)
    orders = [
        order(minute + timedelta(seconds=5), "MATCHED"),
        order(minute + timedelta(seconds=9), "MATCHED"),
        order(minute + timedelta(seconds=15), "CANCELED"),
        order(minute - timedelta(minutes=3), "PENDING"),
        order(minute - timedelta(minutes=31), "MATCHED"),  # before the window
    ]
    chart = orders_per_minute(orders, NOW, minutes=30)
    assert chart.totals == {"MATCHED": 2, "CANCELED": 1, "PENDING": 1}
    last = [b for b in chart.bars if b.minute == "12:30"]
    assert [(b.status, b.count) for b in last] == [("MATCHED", 2), ("CANCELED", 1)]
    matched, canceled = last
    assert matched.y + matched.height == BAR_FRAME.bottom  # stacked from the axis up, without overlap
    assert canceled.y + canceled.height == pytest.approx(matched.y)
    assert matched.height == pytest.approx(2 * canceled.height)
    assert [t.label for t in chart.y_ticks] == ["0", "1", "2", "3", "4"]


def test_orders_per_minute_of_no_orders_is_an_empty_chart() -> None:
    chart = orders_per_minute([], NOW)
    assert chart.bars == [] and sum(chart.totals.values()) == 0
    assert chart.x_ticks[0].label == "12:01"


def test_balance_history_is_rebuilt_backwards_from_the_current_balance() -> None:
    t1, t2, t3 = NOW - timedelta(minutes=3), NOW - timedelta(minutes=2), NOW - timedelta(minutes=1)
    newest_first = [entry(3, t3, "-300", "0"), entry(2, t2, "0", "-300"), entry(1, t1, "1000", "1000")]
    history = balance_history(newest_first, Balance("TRY", Decimal(700), Decimal(700)))
    assert history == [
        (t1, Decimal(1000), Decimal(1000)),
        (t2, Decimal(1000), Decimal(700)),
        (t3, Decimal(700), Decimal(700)),
    ]


def test_balance_over_time_steps_from_before_the_first_entry_to_now() -> None:
    deposit = entry(1, NOW - timedelta(minutes=1), "1000", "1000")
    chart = balance_over_time([deposit], Balance("TRY", Decimal(1000), Decimal(1000)), NOW)
    coords = [tuple(map(float, p.split(","))) for p in chart.total_path.split()]
    assert coords[0] == (LINE_FRAME.left, LINE_FRAME.bottom)  # 0 before the deposit
    assert coords[-1] == (LINE_FRAME.right, LINE_FRAME.bottom - LINE_FRAME.plot_height)  # 1000 (the top) now
    assert len(chart.points) == 1 and "total 1,000.00" in chart.points[0].label
    # The time axis fits the data: from just before the deposit to now, labelled to the second.
    assert [t.label for t in chart.x_ticks] == ["12:29:15", "12:29:31", "12:29:47", "12:30:03", "12:30:20"]
    assert chart.points[0].x == pytest.approx(LINE_FRAME.left + LINE_FRAME.plot_width * 0.08 / 1.08, abs=0.1)
    assert [t.label for t in chart.y_ticks] == ["0", "200", "400", "600", "800", "1k"]


@pytest.mark.parametrize(
    ("smallest", "largest", "bounds"),
    [
        (0, 251_000.5, (0, 300_000, 50_000)),  # not 500k for a 251k balance
        (0, 1000, (0, 1000, 200)),
        (0, 3, (0, 3, 0.5)),
        (249_000, 251_000, (249_000, 251_000, 500)),  # well above zero: the range's own floor
        (0, 0, (0, 1, 0.25)),
    ],
)
def test_value_scale_fits_round_bounds_around_the_values(
    smallest: float, largest: float, bounds: tuple[float, float, float]
) -> None:
    scale = value_scale(smallest, largest)
    assert (scale.low, scale.high, scale.step) == bounds
    assert (scale.low <= smallest and largest <= scale.high and 2 <= scale.intervals <= 6) or largest == 0


def test_balance_over_time_without_entries_is_empty() -> None:
    assert balance_over_time([], Balance("TRY", Decimal(0), Decimal(0)), NOW).empty
