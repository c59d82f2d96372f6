"""What the market service keeps of an instrument besides its public rules (the volatility its sim moves it
with), what an admin is told when a change breaks the rules, and the market as the board holds it."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from pydantic import ValidationError

from oms.kernel.market import MarketBoard, Quote
from oms.market.domain import ChangeRefused, InstrumentChange, change_listing, listing_of
from oms.market.reference import shipped_references
from tests.unit.test_market_rules import AAPL, quote

REFERENCE = next(r for r in shipped_references() if r.symbol == "AAPL")


def test_a_shipped_symbol_moves_with_its_own_volatility() -> None:
    assert listing_of(REFERENCE).daily_volatility == REFERENCE.daily_volatility


def test_a_change_keeps_the_volatility_unless_it_names_one() -> None:
    listed = listing_of(REFERENCE)
    renamed = change_listing("AAPL", listed, InstrumentChange(name="Apple"), D("0.5"))
    assert renamed.daily_volatility == listed.daily_volatility
    calmer = change_listing("AAPL", listed, InstrumentChange(daily_volatility=D("0.001")), D("0.5"))
    assert (calmer.daily_volatility, calmer.version) == (D("0.001"), listed.version + 1)


def test_a_change_breaking_the_rules_is_refused_with_the_first_broken_rule() -> None:
    listed = listing_of(REFERENCE)
    with pytest.raises(ChangeRefused) as refused:
        change_listing("AAPL", listed, InstrumentChange(name="x" * 201, tick_size=D(0)), D("0.02"))
    assert str(refused.value) == "String should have at most 200 characters"


def test_a_price_sent_as_a_float_is_refused_saying_how_to_send_it() -> None:
    with pytest.raises(ValidationError) as refused:
        Quote.model_validate(quote(1).model_dump() | {"bid": 1.5})
    assert [e["msg"] for e in refused.value.errors()] == [
        "Value error, prices travel as decimal strings, never as floating-point numbers"
    ]


async def test_the_board_gives_the_last_traded_price_once_there_is_a_quote() -> None:
    board = MarketBoard()
    board.list_instrument(AAPL)
    await board.publish(quote(1, last="191.00"))
    assert board.last_price("AAPL") == D("191.00")


async def test_a_listener_that_stopped_listening_hears_nothing_and_stopping_twice_is_harmless() -> None:
    board, heard = MarketBoard(), []

    async def listener(q: Quote) -> None:
        heard.append(q.sequence)

    board.listen(listener)
    await board.publish(quote(1))
    board.unlisten(listener)
    board.unlisten(listener)
    await board.publish(quote(2))
    assert heard == [1]
    latest = board.quote("AAPL")
    assert latest is not None and latest.sequence == 2  # the board itself still takes the quotes
