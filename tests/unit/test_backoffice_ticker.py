"""The ticker strip's pure parts: which symbols a user sees, how a quote reads on it (up and down told by an
arrow and a sign, not only by colour), the recent quotes kept for charts, and the price chart's scaling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from oms.backoffice.charts import PRICE_FRAME, QuotePoint, price_chart
from oms.backoffice.live import html_event
from oms.backoffice.tape import QuoteHistory
from oms.backoffice.ticker import configured_symbols, most_active, ticker_item, ticker_symbols
from oms.kernel.market import Instrument, Quote

LISTED = {"AAPL", "AMZN", "GOOG", "MSFT", "THYAO", "BRK.B", "A"}
NOW = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
AAPL = Instrument(symbol="AAPL", name="Apple", tick_size=D("0.01"), lot_size=D(1), reference_price=D(200))


def quote(last: str, sequence: int = 1, at: datetime = NOW, symbol: str = "AAPL") -> Quote:
    price = D(last)
    return Quote(
        symbol=symbol, bid=price - D("0.01"), ask=price + D("0.01"), last=price, time=at, sequence=sequence
    )


def test_ticker_symbols_held_first_then_ordered_then_configured_then_the_first_listed() -> None:
    chosen = ticker_symbols(
        LISTED, held=["TRY", "MSFT"], ordered=["THYAO", "MSFT"], configured=["GOOG"], size=6
    )
    assert chosen == ["MSFT", "THYAO", "GOOG", "A", "AAPL", "AMZN"]


def test_ticker_symbols_leave_out_what_is_not_listed_and_stop_at_the_size() -> None:
    assert ticker_symbols(LISTED, held=["ZZZ", "AAPL"], configured=["NOPE"], size=2) == ["AAPL", "A"]
    assert ticker_symbols(set(), held=["AAPL"]) == []
    assert len(ticker_symbols(LISTED)) == len(LISTED)


def test_most_active_counts_orders_per_symbol_ties_in_first_seen_order() -> None:
    assert most_active(["MSFT", "AAPL", "AAPL", "GOOG", "MSFT", "AAPL"]) == ["AAPL", "MSFT", "GOOG"]
    assert most_active([]) == []


def test_configured_symbols_read_a_comma_separated_setting() -> None:
    assert configured_symbols(" aapl, ,brk.b,MSFT ") == ["AAPL", "BRK.B", "MSFT"]
    assert configured_symbols("") == []


def test_a_rise_reads_up_with_an_arrow_and_a_plus_sign() -> None:
    item = ticker_item("AAPL", quote("201.5", sequence=7), AAPL)
    assert (item.direction, item.arrow, item.change, item.percent) == ("up", "▲", "+1.50", "+0.75 %")
    assert (item.last, item.bid, item.ask, item.sequence) == ("201.50", "201.49", "201.51", 7)
    assert item.spoken == "up 1.50 (0.75 %)"


def test_a_fall_reads_down_with_an_arrow_and_a_minus_sign() -> None:
    item = ticker_item("AAPL", quote("1990.25"), AAPL.model_copy(update={"reference_price": D("2000")}))
    assert (item.direction, item.arrow, item.change, item.percent) == ("down", "▼", "-9.75", "-0.49 %")
    assert item.last == "1,990.25"
    assert item.spoken == "down 9.75 (0.49 %)"


def test_no_change_or_no_reference_reads_unchanged() -> None:
    flat = ticker_item("AAPL", quote("200"), AAPL)
    assert (flat.direction, flat.change, flat.percent, flat.spoken) == ("flat", "0.00", "0.00 %", "unchanged")
    assert ticker_item("AAPL", quote("250"), None).direction == "flat"


def test_a_symbol_without_a_quote_yet_says_so() -> None:
    item = ticker_item("AAPL", None, AAPL)
    assert not item.quoted and item.sequence == 0


def test_an_html_event_carries_each_line_of_its_fragment_as_data() -> None:
    assert html_event("quote-AAPL", "<li>\n  AAPL\n</li>\n") == (
        b"event: quote-AAPL\ndata: <li>\ndata:   AAPL\ndata: </li>\n\n"
    )
    assert html_event("ticker", "") == b"event: ticker\ndata: \n\n"


# -- the quotes kept for charts ------------------------------------------------------------------------
def test_history_keeps_the_quotes_of_watched_symbols_only() -> None:
    history = QuoteHistory()
    history.record(quote("200"))
    history.watch(["AAPL"])
    history.record(quote("201", 2))
    history.record(quote("300", 1, symbol="MSFT"))
    assert [p.last for p in history.points("AAPL")] == [D(201)]
    assert history.points("MSFT") == []


def test_history_keeps_a_point_per_spacing_the_newest_following_the_market() -> None:
    history = QuoteHistory(spacing=1.0)
    history.watch(["AAPL"])
    times = [0, 1, 1.3, 1.6, 2.2, 2.5]  # 202 and 203 are replaced by the newer 204, 1.2 s after 201
    for i, seconds in enumerate(times):
        history.record(quote(str(200 + i), i + 1, NOW + timedelta(seconds=seconds)))
    assert [p.last for p in history.points("AAPL")] == [D(200), D(201), D(204), D(205)]


def test_history_forgets_symbols_nobody_watched_for_long_and_bounds_how_many() -> None:
    history = QuoteHistory(max_watched=2)
    history.watch(["AAPL"], now=0)
    history.watch(["MSFT"], now=1)
    history.watch(["GOOG"], now=2)  # AAPL watched longest ago: it goes
    for symbol in ("AAPL", "MSFT", "GOOG"):
        history.record(quote("100", symbol=symbol))
    assert [bool(history.points(s)) for s in ("AAPL", "MSFT", "GOOG")] == [False, True, True]
    history.watch(["AMZN"], now=10_000)  # the others were not watched for WATCH_FOR seconds
    history.record(quote("100", 2, symbol="MSFT"))
    assert history.points("MSFT") == []


# -- the price chart -----------------------------------------------------------------------------------
def _points(lasts: list[str], every: float = 1.0) -> list[QuotePoint]:
    return [
        QuotePoint(NOW + timedelta(seconds=i * every), D(v) - D("0.02"), D(v) + D("0.02"), D(v))
        for i, v in enumerate(lasts)
    ]


def test_price_chart_bounds_hug_the_prices_never_from_zero() -> None:
    chart = price_chart("AAPL", _points(["250.10", "250.90", "251.30"]), NOW + timedelta(seconds=2))
    low, high = float(chart.y_ticks[0].label), float(chart.y_ticks[-1].label)
    assert 249 <= low <= 250.08 and 251.32 <= high <= 252
    ys = [float(pair.split(",")[1]) for path in (chart.bid_path, chart.ask_path) for pair in path.split()]
    assert all(
        PRICE_FRAME.bottom - PRICE_FRAME.plot_height - 0.1 <= y <= PRICE_FRAME.bottom + 0.1 for y in ys
    )


def test_price_chart_time_axis_runs_from_the_first_quote_to_now() -> None:
    points = _points(["10", "11", "12"], every=60)
    chart = price_chart("AAPL", points, NOW + timedelta(minutes=2))
    xs = [float(pair.split(",")[0]) for pair in chart.last_path.split()]
    assert xs[0] == PRICE_FRAME.left and xs[-1] == PRICE_FRAME.right
    assert (chart.x_ticks[0].label, chart.x_ticks[-1].label) == ("10:00:00", "10:02:00")
    assert chart.count == 3 and chart.latest == points[-1]


def test_price_chart_of_a_few_seconds_spans_at_least_half_a_minute() -> None:
    chart = price_chart("AAPL", _points(["10", "11"]), NOW + timedelta(seconds=1))
    xs = [float(pair.split(",")[0]) for pair in chart.last_path.split()]
    assert xs[0] == PRICE_FRAME.left and xs[1] < PRICE_FRAME.left + PRICE_FRAME.plot_width / 10


def test_price_chart_of_one_quote_or_none() -> None:
    one = price_chart("AAPL", _points(["10"]), NOW)
    assert len(one.last_path.split()) == 1 and not one.empty
    assert price_chart("AAPL", [], NOW).empty
