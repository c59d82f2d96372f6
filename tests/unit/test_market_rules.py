"""The market rules every service applies: tick grid, lots, band, crossing, the collar, stale quotes."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from pydantic import ValidationError

from oms.kernel.market import Instrument, InstrumentStatus, MarketBoard, Quote, collared_price
from oms.kernel.money import Side

AAPL = Instrument(
    symbol="AAPL", name="Apple Inc.", tick_size=D("0.01"), lot_size=D(1), reference_price=D(190)
)


def quote(sequence: int, bid: str = "189.99", ask: str = "190.01", last: str = "190.00") -> Quote:
    return Quote(
        symbol="AAPL", bid=D(bid), ask=D(ask), last=D(last), time=datetime.now(UTC), sequence=sequence
    )


def test_the_band_is_ten_percent_around_the_last_price_on_the_tick_grid() -> None:
    assert AAPL.band(D(190)) == (D("171.00"), D("209.00"))
    assert AAPL.band(D("0.05")) == (D("0.05"), D("0.05"))  # inside the band and on the grid
    wide = AAPL.model_copy(update={"price_band_percent": D(100)})
    assert wide.band(D("0.05")) == (D("0.01"), D("0.10"))  # never below one tick


@pytest.mark.parametrize(
    ("price", "last", "problem"),
    [
        ("0.000001", None, "tick size"),  # the attack: a price from nothing
        ("99999999999999999999", None, "outside the price band"),
        ("170.99", None, "outside the price band"),
        ("209.01", None, "outside the price band"),
        ("250.00", D(240), None),  # the band follows the last price, not the reference
        ("171.00", None, None),
        ("209.00", None, None),
    ],
)
def test_a_limit_price_must_be_on_the_grid_and_inside_the_band(
    price: str, last: D | None, problem: str | None
) -> None:
    found = AAPL.price_problem(D(price), last)
    assert (found is None) if problem is None else (problem in str(found))


def test_sizes_are_whole_lots() -> None:
    lots_of_ten = AAPL.model_copy(update={"lot_size": D(10)})
    assert lots_of_ten.size_problem(D(20)) is None
    assert "lot size 10" in str(lots_of_ten.size_problem(D(15)))


def test_a_buy_crosses_at_the_ask_and_a_sell_at_the_bid() -> None:
    q = quote(1)
    assert q.crosses(Side.BUY, D("190.01")) and not q.crosses(Side.BUY, D("190.00"))
    assert q.crosses(Side.SELL, D("189.99")) and not q.crosses(Side.SELL, D("190.00"))
    assert q.crosses(Side.BUY, None) and q.crosses(Side.SELL, None)  # MARKET orders
    assert (q.price_for(Side.BUY), q.price_for(Side.SELL)) == (D("190.01"), D("189.99"))


def test_the_collar_is_rounded_up_to_the_tick() -> None:
    assert collared_price(D("190.01"), D("0.05"), D("0.01")) == D("199.52")  # 199.5105 → up


def test_wire_form_is_camel_case_with_decimal_strings_and_refuses_floats() -> None:
    assert Instrument.model_validate_json(AAPL.model_dump_json()) == AAPL
    assert '"tickSize":"0.01"' in AAPL.model_dump_json()
    with pytest.raises(ValidationError):
        Quote.model_validate(quote(1).model_dump() | {"bid": 1.5})
    assert AAPL.is_open and not AAPL.model_copy(update={"status": InstrumentStatus.HALTED}).is_open


async def test_the_board_passes_each_quote_on_once_and_never_an_older_one() -> None:
    board, heard = MarketBoard(), []

    async def listener(q: Quote) -> None:
        heard.append(q.sequence)

    board.list_instrument(AAPL)
    board.listen(listener)
    assert board.last_price("AAPL") == D(190)  # the reference price before the first quote
    assert await board.publish(quote(1, last="191.00"))
    assert not await board.publish(quote(1))  # seen twice
    assert await board.publish(quote(3))
    assert not await board.publish(quote(2))  # late
    assert heard == [1, 3]
    assert board.quote("AAPL") == quote(3).model_copy(update={"time": board.quote("AAPL").time})  # type: ignore[union-attr]
    assert board.last_price("MSFT") is None
