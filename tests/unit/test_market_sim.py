"""The market service's pure parts: the sim's random walk, its schedule, replay files, the shipped reference
data, the security master's change rules, and which source prices the feed refuses."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from oms.kernel.market import Instrument, InstrumentStatus, Quote
from oms.market.domain import ChangeRefused, InstrumentChange, Listing, change_listing, listing_of
from oms.market.feed import refusal
from oms.market.reference import Day, on_tick, parkinson_volatility, shipped_references
from oms.market.sim import Prices, RandomWalk
from oms.market.sources import ReplayError, ReplaySource, SimSource, read_replay

AAPL = Instrument(
    symbol="AAPL", name="Apple Inc.", tick_size=D("0.01"), lot_size=D(1), reference_price=D("249.64")
)


def walk(seed: int = 7, steps_per_second: float = 1.0, symbol: str = "AAPL") -> RandomWalk:
    return RandomWalk(symbol, D("249.64"), D("0.018"), seed=seed, steps_per_second=steps_per_second)


def path(source: RandomWalk, steps: int) -> list[Prices]:
    return [source.step(AAPL) for _ in range(steps)]


def test_the_same_seed_gives_the_same_quotes_and_another_seed_others() -> None:
    assert path(walk(seed=7), 200) == path(walk(seed=7), 200)
    assert path(walk(seed=7), 200) != path(walk(seed=8), 200)
    assert path(walk(symbol="AAPL"), 50) != [
        Prices("AAPL", p.bid, p.ask, p.last) for p in path(walk(symbol="MSFT"), 50)
    ]  # each symbol its own generator


def test_every_quote_has_bid_below_ask_on_the_tick_grid_a_few_ticks_apart() -> None:
    for prices in path(walk(), 5000):
        assert D(0) < prices.bid < prices.ask
        assert prices.bid <= prices.last <= prices.ask
        for price in (prices.bid, prices.ask, prices.last):
            assert price % AAPL.tick_size == 0
        assert 1 <= (prices.ask - prices.bid) / AAPL.tick_size <= 4


def test_a_penny_stock_never_quotes_below_one_tick() -> None:
    cheap = AAPL.model_copy(update={"reference_price": D("0.02")})
    source = RandomWalk("AAPL", D("0.02"), D("0.5"), seed=1, steps_per_second=1 / 3600)
    assert all(p.bid >= cheap.tick_size for p in path_of(source, cheap, 2000))


def path_of(source: RandomWalk, instrument: Instrument, steps: int) -> list[Prices]:
    return [source.step(instrument) for _ in range(steps)]


def test_the_walk_moves_with_the_instruments_daily_volatility_and_stays_around_its_reference() -> None:
    per_day = 390  # a step a minute
    source = walk(seed=3, steps_per_second=1 / 60)
    lasts = [float(p.last) for p in path(source, 40 * per_day)]
    returns = [math.log(b / a) for a, b in itertools.pairwise(lasts)]
    daily = statistics.pstdev(returns) * math.sqrt(per_day)
    assert 0.016 < daily < 0.020  # 0.018 asked for
    assert all(abs(math.log(last / 249.64)) < 10 * 0.018 for last in lasts)  # pulled back, not drifting off


class FakeMarket:
    """The Listed interface over a fixed list of instruments and the quotes set as published."""

    def __init__(self, *instruments: Instrument) -> None:
        self.listings = [Listing(i, D("0.02")) for i in instruments]
        self.quotes: dict[str, Quote] = {}  # the latest published, by symbol

    def quoted(self) -> list[Listing]:
        return self.listings

    def latest(self, symbol: str) -> Quote | None:
        return self.quotes.get(symbol)


class Clock:
    """Time that passes only when the source sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def take(batches: AsyncIterator[list[Prices]], count: int) -> list[Prices]:
    taken: list[Prices] = []
    async for batch in batches:
        taken += batch
        if len(taken) >= count:
            return taken
    return taken


async def test_the_sim_quotes_each_symbol_at_its_rate_in_turn() -> None:
    msft = AAPL.model_copy(update={"symbol": "MSFT", "reference_price": D("24.22")})
    clock = Clock()
    source = SimSource(seed=1, quotes_per_second=100, clock=clock, sleep=clock.sleep)
    quotes = await take(source.prices(FakeMarket(AAPL, msft)), 2000)
    assert 9.9 <= clock.now <= 10.1  # 2 symbols × 100 a second
    assert abs(sum(q.symbol == "AAPL" for q in quotes) - sum(q.symbol == "MSFT" for q in quotes)) <= 1


async def test_a_slow_rate_per_symbol_over_many_symbols_gives_the_rate_asked_for() -> None:
    listed = [AAPL.model_copy(update={"symbol": f"S{n:03}"}) for n in range(500)]
    clock = Clock()
    source = SimSource(seed=1, quotes_per_second=0.2, clock=clock, sleep=clock.sleep)
    quotes = await take(source.prices(FakeMarket(*listed)), 1000)
    assert 9.9 <= clock.now <= 10.1  # 500 symbols × 0.2 a second: 100 a second, not 100 every 5 s
    assert len({q.symbol for q in quotes}) == 500


async def test_a_feed_that_takes_the_turn_again_goes_on_from_the_market_not_from_where_it_left() -> None:
    """A market replica quotes, loses the feed lock, the other replica moves the price on, and the first
    takes the lock back: its walk goes on from the latest quote published, not from its own old path."""
    clock, market = Clock(), FakeMarket(AAPL)
    source = SimSource(seed=1, quotes_per_second=10, clock=clock, sleep=clock.sleep)
    first_turn = await take(source.prices(market), 20)
    assert all(abs(p.last - D("249.64")) < 5 for p in first_turn)
    moved = Quote(
        symbol="AAPL", bid=D("299.99"), ask=D("300.01"), last=D("300.00"), time=datetime.now(UTC), sequence=99
    )
    market.quotes["AAPL"] = moved  # published by the other replica meanwhile
    next_turn = await take(source.prices(market), 1)
    assert abs(next_turn[0].last - moved.last) < 2


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("when,symbol,bid,ask,last\n0,AAPL,1,2,1\n", "line 1: the header"),
        ("time,symbol,bid,ask,last\n0,AAPL,2,1,1\n", "line 2: the bid 2 must be below the ask 1"),
        ("time,symbol,bid,ask,last\n0,AAPL,1,2,1\n0,AAPL,-1,2,1\n", "line 3"),
        ("time,symbol,bid,ask,last\n5,AAPL,1,2,1\n4,AAPL,1,2,1\n", "line 3: rows must be in time order"),
        ("time,symbol,bid,ask,last\n0,AAPL,1,2,1\n2026-12-06T10:00:00Z,AAPL,1,2,1\n", "line 3: times"),
        ("time,symbol,bid,ask,last\n2026-12-06T10:00:00,AAPL,1,2,1\n", "line 2: the time"),
        ("time,symbol,bid,ask,last\n0,aapl!,1,2,1\n", "line 2: asset name"),
        ("time,symbol,bid,ask,last\n0,AAPL,1,2\n", "line 2: 4 columns"),
    ],
)
def test_a_bad_replay_file_is_refused_naming_the_line(text: str, error: str) -> None:
    with pytest.raises(ReplayError, match=error):
        read_replay(text)


async def test_a_replay_gives_its_rows_in_order_those_of_one_moment_together() -> None:
    rows = read_replay(
        "time,symbol,bid,ask,last\n"
        "2026-12-06T10:00:00Z,AAPL,249.60,249.62,249.61\n"
        "2026-12-06T10:00:00Z,MSFT,24.20,24.22,24.21\n"
        "2026-12-06T10:00:00.5+00:00,AAPL,249.70,249.72,249.70\n"
        "\n"
    )
    assert [r.offset for r in rows] == [0, 0, 0.5]
    assert rows[2].prices == Prices("AAPL", D("249.70"), D("249.72"), D("249.70"))
    batches = [batch async for batch in ReplaySource(rows, speed=0).prices(FakeMarket(AAPL))]
    assert [[p.symbol for p in batch] for batch in batches] == [["AAPL", "MSFT"], ["AAPL"]]


def test_the_shipped_data_set_lists_real_symbols_at_their_last_close() -> None:
    references = {r.symbol: r for r in shipped_references()}
    assert len(references) == 524
    aapl = references["AAPL"]
    assert (aapl.name, aapl.reference_price) == ("Apple Inc.", D("249.64"))  # the close of 2010-08-20
    assert "BRK.B" in references and "TRY" not in references
    assert all(D("0.003") < r.daily_volatility < D("0.06") for r in references.values())


def test_the_volatility_ignores_a_day_of_bad_prints_and_prices_round_to_the_tick() -> None:
    calm = [Day(D("101"), D("99"), D("100"))] * 20
    flash_crash = [*calm, Day(D("101"), D("2"), D("100"))]
    assert parkinson_volatility(flash_crash) == parkinson_volatility(calm)
    assert parkinson_volatility(calm) == D(math.log(101 / 99) / math.sqrt(4 * math.log(2))).quantize(
        D("1e-6")
    )
    assert (on_tick(D("30.335")), on_tick(D("30.345")), on_tick(D("0.001"))) == (
        D("30.34"),
        D("30.34"),
        D("0.01"),
    )


def test_a_new_instrument_needs_a_name_and_a_reference_price_on_its_grid() -> None:
    new = InstrumentChange(name="Türk Hava Yolları", reference_price=D("312.25"), tick_size=D("0.25"))
    listed = change_listing("THYAO", None, new, D("0.02"))
    assert listed.instrument.status is InstrumentStatus.OPEN and listed.version == 1
    assert (listed.instrument.lot_size, listed.daily_volatility) == (D(1), D("0.02"))
    for symbol, change, problem in [
        ("THYAO", InstrumentChange(name="x"), "needs a name and a reference price"),
        ("THYAO", InstrumentChange(name="x", reference_price=D("312.3"), tick_size=D("0.25")), "multiple"),
        ("TRY", InstrumentChange(name="Lira", reference_price=D(1)), "cash asset"),
    ]:
        with pytest.raises(ChangeRefused, match=problem):
            change_listing(symbol, None, change, D("0.02"))


def test_halting_reopening_and_changing_rules_each_make_a_new_version() -> None:
    listed = listing_of(next(r for r in shipped_references() if r.symbol == "AAPL"))
    halted = change_listing("AAPL", listed, InstrumentChange(status=InstrumentStatus.HALTED), D("0.02"))
    assert (halted.instrument.is_open, halted.version, halted.msg_id) == (False, 2, "instrument:AAPL:2")
    assert change_listing("AAPL", halted, InstrumentChange(status=InstrumentStatus.HALTED), D(0)) == halted
    reopened = change_listing("AAPL", halted, InstrumentChange(status=InstrumentStatus.OPEN), D("0.02"))
    assert reopened.instrument == listed.instrument and reopened.version == 3
    wider = change_listing("AAPL", reopened, InstrumentChange(price_band_percent=D(20), lot_size=D(10)), D(0))
    assert (wider.instrument.price_band_percent, wider.instrument.lot_size) == (D(20), D(10))
    with pytest.raises(ChangeRefused, match="multiple of the tick size"):
        change_listing("AAPL", listed, InstrumentChange(tick_size=D("0.05")), D(0))  # 249.64 is off that grid


@pytest.mark.parametrize(
    ("prices", "instrument", "problem"),
    [
        (Prices("AAPL", D("249.60"), D("249.62"), D("249.61")), AAPL, None),
        (Prices("AAPL", D("249.60"), D("249.62"), D("249.61")), None, "not listed"),
        (
            Prices("AAPL", D("249.60"), D("249.62"), D("249.61")),
            AAPL.model_copy(update={"status": InstrumentStatus.HALTED}),
            "halted",
        ),
        (Prices("AAPL", D("249.62"), D("249.62"), D("249.62")), AAPL, "bid not below ask"),
        (Prices("AAPL", D("249.605"), D("249.62"), D("249.61")), AAPL, "off the tick grid"),
    ],
)
def test_the_feed_publishes_only_open_instruments_prices_on_their_grid(
    prices: Prices, instrument: Instrument | None, problem: str | None
) -> None:
    assert refusal(prices, instrument) == problem
