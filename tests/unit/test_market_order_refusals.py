"""Orders at market prices as the client and the account see them: the exact refusals of what cannot be
placed or matched, and the account's checks of what a BUY reserves and of the price an order was executed at
(tests/unit/test_order_execution.py and test_account_domain.py hold the rules themselves)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D

import pytest

from oms.account.domain import CASH, EntryKind, FundsRejected, Problem, Refused, reserve_funds, settle
from oms.order.domain import (
    BEYOND_COLLAR,
    MATCHED,
    PENDING,
    MarketUnavailable,
    NotMarketable,
    OrderInvalid,
    PlaceOrder,
    TransitionRefused,
    place_order,
)
from tests.unit.test_account_domain import NOW, balance, by_name, held_for, terms
from tests.unit.test_order_execution import MARKET_ORDER, T0, T1, command, quote, reserved


def test_without_a_market_a_market_order_is_refused_saying_why() -> None:
    assert place_order(command(price=None, order_type=MARKET_ORDER), T0) == MarketUnavailable(
        "MARKET orders need the market's prices, which this service does not have"
    )


@pytest.mark.parametrize(
    ("cmd", "problem"),
    [
        (
            command(price="300", order_type=MARKET_ORDER),
            "a MARKET order has no price: it executes at the market's",
        ),
        (command(price=None), "a LIMIT order needs a price"),
    ],
)
def test_a_price_where_none_belongs_or_none_where_one_does_is_refused_saying_why(
    cmd: PlaceOrder, problem: str
) -> None:
    assert place_order(cmd, T0) == OrderInvalid((problem,))


def test_an_admin_match_at_the_limit_of_a_market_order_is_refused_saying_why() -> None:
    order = reserved(command(price=None, order_type=MARKET_ORDER))
    assert order.match(T1) == TransitionRefused(
        order.id, PENDING, MATCHED, "a MARKET order executes only at the market's price"
    )


def test_an_admin_match_the_market_cannot_take_is_refused_with_the_quote_checked() -> None:
    order = reserved(command(price="300"))
    assert order.match_at(None, T1) == NotMarketable(order.id, None, "order is not marketable: no quote yet")
    market_buy = reserved(command(price=None, order_type=MARKET_ORDER), q=quote("299.95", "300.05"))
    moved = quote("320", "320.05", sequence=2)
    assert market_buy.match_at(moved, T1) == NotMarketable(
        market_buy.id, moved, f"order is not marketable: {BEYOND_COLLAR}"
    )


def test_a_buy_that_does_not_say_what_it_reserves_is_rejected_saying_why() -> None:
    effect = reserve_funds(replace(terms(), price=None), by_name(balance(CASH, "100")), now=NOW)
    (rejection,) = effect.events
    assert isinstance(rejection, FundsRejected) and rejection.reason == "a BUY must say what it reserves"


@pytest.mark.parametrize("price", [None, D(0)])
def test_a_match_without_an_executed_price_is_not_settled(price: D | None) -> None:
    order = terms()
    effect = settle(held_for(order), replace(order, price=price), by_name(balance(CASH, "100", "75")))
    assert effect.refused == Refused(
        Problem.INCONSISTENT, f"order {order.order_id} was matched without an executed price"
    )


def test_what_a_buy_executed_below_its_reservation_gives_back_names_the_order_and_reservation() -> None:
    order = terms(price="2.5")
    held = held_for(order)
    effect = settle(held, replace(order, price=D("2.31")), by_name(balance(CASH, "100", "75")))
    (release,) = [e for e in effect.entries if e.kind is EntryKind.RELEASE]
    assert (release.order_id, release.reference) == (order.order_id, str(held.id))
