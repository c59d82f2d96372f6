"""The bench's market rules: the prices its orders name are ones the order service accepts (tick grid, band,
whole lots) and that execute at once, or, for the resting ladder, rest until a quote crosses exactly one
level."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

import pytest

from oms.bench.ladder import Ladder
from oms.bench.market import Market, opening_rows, write_opening_replay
from oms.kernel.market import Instrument, Quote
from oms.kernel.money import Side
from oms.market.sources import read_replay

AAPL = Instrument(symbol="AAPL", name="Apple", tick_size=D("0.01"), lot_size=D(1), reference_price=D(250))
GARAN = Instrument(
    symbol="GARAN", name="Garanti", tick_size=D("0.05"), lot_size=D(10), reference_price=D(100)
)


def _quote(instrument: Instrument, bid: str, ask: str, last: str, sequence: int = 1) -> Quote:
    return Quote(
        symbol=instrument.symbol,
        bid=D(bid),
        ask=D(ask),
        last=D(last),
        time=datetime.now(UTC),
        sequence=sequence,
    )


def _market(*quotes: Quote) -> Market:
    return Market({i.symbol: i for i in (AAPL, GARAN)}, {q.symbol: q for q in quotes})


@pytest.mark.parametrize("side", list(Side))
def test_marketable_limits_cross_the_quote_on_the_grid_inside_the_band(side: Side) -> None:
    market = _market(_quote(AAPL, "249.99", "250.01", "250.00"), _quote(GARAN, "100.00", "100.10", "100.05"))
    for symbol, instrument in market.instruments.items():
        limit = market.marketable_limit(symbol, side)
        quote = market.quotes[symbol]
        assert quote.crosses(side, limit)
        assert limit != quote.price_for(side)  # room for the quote to move before the order is decided
        assert instrument.price_problem(limit, quote.last) is None


def test_a_marketable_limit_never_leaves_the_band() -> None:
    # The ask is at the top of the band: a BUY can only name the ask itself.
    market = _market(_quote(GARAN, "109.95", "110.00", "100.00"))
    assert market.marketable_limit("GARAN", Side.BUY) == D("110.00")
    assert GARAN.price_problem(D("110.00"), D("100.00")) is None


def test_newer_quotes_replace_older_ones_only() -> None:
    market = _market(_quote(AAPL, "249.99", "250.01", "250.00", sequence=5))
    answer = {"symbol": "AAPL", "bid": D(1), "ask": D(2), "last": D(1), "time": "2026-12-06T10:00:00Z"}
    market.update([{**answer, "sequence": 4}])
    assert market.quotes["AAPL"].sequence == 5
    market.update([{**answer, "sequence": 6, "extra": 1}])  # a field the bench does not know is left out
    assert market.quotes["AAPL"].ask == D(2)


def test_the_ladder_rests_every_order_inside_the_band_and_none_is_crossed_by_the_base_quote() -> None:
    base = _quote(AAPL, "249.99", "250.01", "250.00")
    ladder = Ladder.lay_out(AAPL, base, 10_000)
    places = ladder.places()
    assert len(places) == 10_000
    assert sum(1 for side, _ in places if side is Side.BUY) == 5_000
    for side, price in places:
        assert AAPL.price_problem(price, base.last) is None
        assert not base.crosses(side, price)
        for turn in range(2):
            bid, ask = ladder.ordinary(turn)
            assert not _quote(AAPL, str(bid), str(ask), "250").crosses(side, price)


def test_a_crossing_quote_crosses_exactly_the_best_level_left() -> None:
    base = _quote(GARAN, "100.00", "100.10", "100.05")
    ladder = Ladder.lay_out(GARAN, base, 40)
    for n, (side, price) in enumerate(ladder.places()):
        ladder.placed(side, price, f"order-{n}")
    for side in Side:
        crossing = ladder.next_crossing(side)
        assert crossing is not None
        bid, ask, level = crossing
        quote = _quote(GARAN, str(bid), str(ask), "100.05")
        crossed = [lv for lv in [level, *ladder.levels[side]] if quote.crosses(side, lv.price)]
        assert crossed == [level] and level.order_ids
        assert quote.price_for(side) == level.price  # executed at its own limit
        other = Side.SELL if side is Side.BUY else Side.BUY
        assert not any(quote.crosses(other, lv.price) for lv in ladder.levels[other])


def test_the_opening_replay_is_a_valid_replay_of_every_listed_symbol(tmp_path: Path) -> None:
    rows = read_replay(write_opening_replay(tmp_path / "open.csv").read_text())
    assert len(rows) == len(opening_rows()) > 500
    assert {r.offset for r in rows} == {0.0}
    assert all(r.prices.bid < r.prices.last < r.prices.ask or r.prices.bid == r.prices.last for r in rows)


def test_a_buy_only_ladder_for_the_probes() -> None:
    ladder = Ladder.lay_out(GARAN, _quote(GARAN, "100.00", "100.10", "100.05"), 30, sell=False)
    assert [side for side, _ in ladder.places()] == [Side.BUY] * 30
    assert ladder.next_crossing(Side.SELL) is None
