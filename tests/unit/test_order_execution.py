"""Orders against the market (SPEC §3b), as pure rules: what may be placed for a listed instrument, and how a
reserved order meets a quote — executed whole at the quote, resting, or canceled (IOC, MARKET, the collar,
the close)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oms.kernel.events import OrderCanceled, OrderMatched
from oms.kernel.market import Instrument, InstrumentStatus, Quote
from oms.kernel.money import OrderType, Side, TimeInForce
from oms.kernel.settings import ExecutionMode
from oms.order.domain import (
    BEYOND_COLLAR,
    CANCELED,
    EXPIRED,
    MATCHED,
    NOT_MARKETABLE,
    PENDING,
    Listing,
    MarketUnavailable,
    NotMarketable,
    Order,
    OrderInvalid,
    OrderPlaced,
    PlaceOrder,
    TransitionRefused,
    place_order,
)

D = Decimal
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
T1 = T0 + timedelta(seconds=1)
CUSTOMER = uuid.uuid4()
MARKET, IMMEDIATE, MANUAL = ExecutionMode.MARKET, ExecutionMode.IMMEDIATE, ExecutionMode.MANUAL
LIMIT, MARKET_ORDER = OrderType.LIMIT, OrderType.MARKET
GTC, DAY, IOC = TimeInForce.GTC, TimeInForce.DAY, TimeInForce.IOC
THYAO = Instrument(
    symbol="THYAO", name="Türk Hava Yolları", tick_size=D("0.05"), lot_size=D(1), reference_price=D(300)
)


def quote(bid: str, ask: str, last: str | None = None, sequence: int = 1) -> Quote:
    return Quote(symbol="THYAO", bid=D(bid), ask=D(ask), last=D(last or bid), time=T0, sequence=sequence)


def listing(q: Quote | None = None, instrument: Instrument | None = THYAO) -> Listing:
    return Listing(instrument, q, D("0.05"))


def command(
    side: Side = Side.BUY,
    size: str = "10",
    price: str | None = "300",
    order_type: OrderType = LIMIT,
    time_in_force: TimeInForce = GTC,
    symbol: str = "THYAO",
) -> PlaceOrder:
    return PlaceOrder(CUSTOMER, symbol, side, D(size), D(price) if price else None, order_type, time_in_force)


def placed(cmd: PlaceOrder, q: Quote | None = None) -> Order:
    result = place_order(cmd, T0, listing=listing(q or quote("299.95", "300.05")))
    assert isinstance(result, OrderPlaced), result
    return result.order


def reserved(cmd: PlaceOrder, mode: ExecutionMode = MANUAL, q: Quote | None = None) -> Order:
    order = placed(cmd, q)
    order.reserve_funds_confirmed(mode, T0, q)
    return order


# --- Placing: the instrument's rules ------------------------------------------------------------------------


def test_place_order_unknown_symbol_invalid() -> None:
    result = place_order(command(symbol="ZZZ"), T0, listing=listing(instrument=None))
    assert result == OrderInvalid(("unknown symbol ZZZ: not a listed instrument",))


def test_place_order_halted_instrument_unavailable() -> None:
    halted = THYAO.model_copy(update={"status": InstrumentStatus.HALTED})
    result = place_order(command(), T0, listing=listing(quote("299.95", "300.05"), halted))
    assert isinstance(result, MarketUnavailable) and "HALTED" in result.message


@pytest.mark.parametrize(
    ("cmd", "problem"),
    [
        (command(price="300.01"), "multiple of the tick size 0.05"),
        (command(price="0.05"), "outside the price band of THYAO: 270 to 330"),
        (command(price="100000000000000000000"), "outside the price band"),
        (command(size="1.5"), "multiple of the lot size 1"),
        (command(price=None), "a LIMIT order needs a price"),
        (command(order_type=MARKET_ORDER), "a MARKET order has no price"),
    ],
)
def test_place_order_against_the_rules_invalid(cmd: PlaceOrder, problem: str) -> None:
    result = place_order(cmd, T0, listing=listing(quote("299.95", "300.05", last="300")))
    assert isinstance(result, OrderInvalid)
    assert any(problem in p for p in result.problems), result.problems


def test_place_order_band_around_the_last_price_not_the_reference() -> None:
    moved = quote("349.95", "350.05", last="350")
    assert isinstance(place_order(command(price="380"), T0, listing=listing(moved)), OrderPlaced)
    assert isinstance(place_order(command(price="300"), T0, listing=listing(moved)), OrderInvalid)


def test_place_order_band_around_the_reference_price_before_any_quote() -> None:
    assert isinstance(place_order(command(price="329.95"), T0, listing=listing(None)), OrderPlaced)
    assert isinstance(place_order(command(price="330.05"), T0, listing=listing(None)), OrderInvalid)


def test_place_order_market_without_a_quote_unavailable() -> None:
    result = place_order(command(price=None, order_type=MARKET_ORDER), T0, listing=listing(None))
    assert isinstance(result, MarketUnavailable) and "no quote for THYAO" in result.message


def test_place_order_market_without_any_market_unavailable() -> None:
    result = place_order(command(price=None, order_type=MARKET_ORDER), T0)
    assert isinstance(result, MarketUnavailable)


def test_place_order_market_buy_reserves_the_ask_plus_the_collar_on_the_grid() -> None:
    order = placed(command(price=None, order_type=MARKET_ORDER), quote("299.95", "300.05"))
    assert order.reserve_price == D("315.10")  # 300.05 × 1.05 = 315.0525, up to the tick
    result = place_order(command(price=None, order_type=MARKET_ORDER), T0, listing=listing(quote("1", "2")))
    assert isinstance(result, OrderPlaced) and result.event.reserve_price == D("2.10")


def test_place_order_market_sell_reserves_no_price() -> None:
    order = placed(command(Side.SELL, price=None, order_type=MARKET_ORDER))
    assert (order.price, order.reserve_price) == (None, None)


def test_place_order_event_carries_type_and_time_in_force() -> None:
    result = place_order(command(time_in_force=DAY), T0, listing=listing(quote("299.95", "300.05")))
    assert isinstance(result, OrderPlaced)
    assert (result.event.order_type, result.event.time_in_force, result.event.price) == (LIMIT, DAY, D(300))


# --- The attack of issue 12: no price that mints money ------------------------------------------------------


def test_attack_buy_at_a_millionth_and_sell_at_ten_to_the_twentieth_refused() -> None:
    market = listing(quote("299.95", "300.05", last="300"))
    tiny = place_order(command(size="1000000", price="0.000001"), T0, listing=market)
    huge = place_order(command(Side.SELL, "1000000", "99999999999999999999"), T0, listing=market)
    assert isinstance(tiny, OrderInvalid) and isinstance(huge, OrderInvalid)


def test_attack_marketable_buy_executes_at_the_ask_not_its_limit() -> None:
    order = reserved(command(price="320"), MARKET, quote("299.95", "300.05"))
    assert (order.status, order.executed_price) == (MATCHED, D("300.05"))


# --- Funds reserved in `market` mode ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "limit", "executed"),
    [(Side.BUY, "300.05", "300.05"), (Side.BUY, "310", "300.05"), (Side.SELL, "299.95", "299.95")],
)
def test_reserved_marketable_limit_executed_at_the_quote(side: Side, limit: str, executed: str) -> None:
    order = placed(command(side, price=limit))
    events = order.reserve_funds_confirmed(MARKET, T1, quote("299.95", "300.05"))
    assert (order.status, order.executed_price) == (MATCHED, D(executed))
    assert events == [
        OrderMatched(
            order_id=order.id, customer_id=CUSTOMER, occurred_at=T1, asset_name="THYAO", side=side,
            size=D(10), executed_price=D(executed),
        )
    ]  # fmt: skip


@pytest.mark.parametrize(("side", "limit"), [(Side.BUY, "300"), (Side.SELL, "300")])
def test_reserved_not_marketable_gtc_rests(side: Side, limit: str) -> None:
    order = placed(command(side, price=limit))
    assert order.reserve_funds_confirmed(MARKET, T1, quote("299.95", "300.05")) == []
    assert (order.status, order.reserved, order.rests) == (PENDING, True, True)


@pytest.mark.parametrize("mode", [MARKET, IMMEDIATE])
def test_reserved_market_order_executed_at_the_quote(mode: ExecutionMode) -> None:
    order = placed(command(Side.SELL, price=None, order_type=MARKET_ORDER))
    order.reserve_funds_confirmed(mode, T1, quote("299.95", "300.05"))
    assert (order.status, order.executed_price) == (MATCHED, D("299.95"))


def test_reserved_ioc_not_marketable_canceled() -> None:
    order = placed(command(price="300", time_in_force=IOC))
    events = order.reserve_funds_confirmed(MARKET, T1, quote("299.95", "300.05"))
    assert (order.status, order.reason) == (CANCELED, NOT_MARKETABLE)
    assert events == [
        OrderCanceled(order_id=order.id, customer_id=CUSTOMER, occurred_at=T1, reason=NOT_MARKETABLE)
    ]


def test_reserved_market_order_without_a_quote_canceled() -> None:
    order = placed(command(price=None, order_type=MARKET_ORDER))
    order.reserve_funds_confirmed(MARKET, T1, None)
    assert (order.status, order.reason) == (CANCELED, NOT_MARKETABLE)


def test_reserved_market_buy_ask_beyond_the_collar_canceled() -> None:
    order = placed(command(price=None, order_type=MARKET_ORDER), quote("299.95", "300.05"))
    order.reserve_funds_confirmed(MARKET, T1, quote("315.10", "315.15", sequence=2))
    assert (order.status, order.reason, order.executed_price) == (CANCELED, BEYOND_COLLAR, None)


def test_reserved_market_buy_ask_at_the_collar_executed() -> None:
    order = placed(command(price=None, order_type=MARKET_ORDER), quote("299.95", "300.05"))
    order.reserve_funds_confirmed(MARKET, T1, quote("315.05", "315.10", sequence=2))
    assert (order.status, order.executed_price) == (MATCHED, D("315.10"))


def test_reserved_immediate_mode_limit_executed_at_its_limit() -> None:
    order = placed(command(price="310"))
    order.reserve_funds_confirmed(IMMEDIATE, T1, quote("299.95", "300.05"))
    assert (order.status, order.executed_price) == (MATCHED, D(310))


def test_reserved_manual_mode_rests_whatever_the_quote() -> None:
    order = placed(command(price=None, order_type=MARKET_ORDER))
    assert order.reserve_funds_confirmed(MANUAL, T1, quote("299.95", "300.05")) == []
    assert (order.status, order.reserved) == (PENDING, True)


# --- A resting order meets later quotes ---------------------------------------------------------------------


def test_meet_crossing_quote_executes_once_at_it() -> None:
    order = reserved(command(price="300"), MARKET, quote("299.95", "300.05"))
    assert order.meet(quote("299.85", "299.90", sequence=2), T1) != []
    assert (order.status, order.executed_price) == (MATCHED, D("299.90"))
    assert order.meet(quote("299.80", "299.85", sequence=3), T1) == []
    assert order.executed_price == D("299.90")


def test_meet_quote_not_crossing_nothing() -> None:
    order = reserved(command(Side.SELL, price="301"), MARKET, quote("299.95", "300.05"))
    assert order.meet(quote("300.95", "301.05", sequence=2), T1) == []
    assert order.status is PENDING


def test_meet_unreserved_order_nothing() -> None:
    order = placed(command(price="310"))
    assert order.meet(quote("299.95", "300.05"), T1) == []
    assert order.status is PENDING


@given(
    side=st.sampled_from(list(Side)),
    limit=st.integers(min_value=1, max_value=400),
    bid=st.integers(min_value=1, max_value=400),
    spread=st.integers(min_value=1, max_value=20),
)
def test_meet_executes_exactly_when_crossed_and_never_worse_than_the_limit(
    side: Side, limit: int, bid: int, spread: int
) -> None:
    order = Order(uuid.uuid4(), CUSTOMER, "THYAO", side, D(limit), D(limit), T0, T0, reserved=True)
    q = Quote(symbol="THYAO", bid=D(bid), ask=D(bid + spread), last=D(bid), time=T0, sequence=1)
    order.meet(q, T1)
    crossed = q.ask <= limit if side is Side.BUY else q.bid >= limit
    assert (order.status is MATCHED) == crossed
    if crossed:
        assert order.executed_price == (q.ask if side is Side.BUY else q.bid)
        assert order.executed_price <= limit if side is Side.BUY else order.executed_price >= limit


# --- An admin's match at the quote --------------------------------------------------------------------------


def test_match_at_crossing_quote_executed_at_it() -> None:
    order = reserved(command(price="310"))
    assert order.match_at(quote("299.95", "300.05"), T1) != []
    assert (order.status, order.executed_price) == (MATCHED, D("300.05"))


def test_match_at_quote_not_crossing_refused_with_the_quote() -> None:
    order = reserved(command(price="300"))
    q = quote("299.95", "300.05")
    refused = order.match_at(q, T1)
    assert refused == NotMarketable(order.id, q, "order is not marketable: bid 299.95, ask 300.05")
    assert order.status is PENDING


def test_match_at_no_quote_refused() -> None:
    order = reserved(command(price="300"))
    refused = order.match_at(None, T1)
    assert isinstance(refused, NotMarketable) and "no quote" in refused.message


def test_match_at_market_buy_beyond_the_collar_refused() -> None:
    order = reserved(command(price=None, order_type=MARKET_ORDER), q=quote("299.95", "300.05"))
    refused = order.match_at(quote("320", "320.05", sequence=2), T1)
    assert isinstance(refused, NotMarketable) and BEYOND_COLLAR in refused.message


def test_match_at_unreserved_order_refused() -> None:
    order = placed(command(price="310"))
    assert isinstance(order.match_at(quote("299.95", "300.05"), T1), TransitionRefused)


def test_match_at_limit_of_a_market_order_refused() -> None:
    order = reserved(command(price=None, order_type=MARKET_ORDER))
    refused = order.match(T1)
    assert isinstance(refused, TransitionRefused) and "market's price" in refused.message


# --- The close ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reserve", [True, False])
def test_expire_pending_day_order_canceled_expired(reserve: bool) -> None:
    order = (
        reserved(command(price="300", time_in_force=DAY)) if reserve else placed(command(time_in_force=DAY))
    )
    events = order.expire(T1)
    assert (order.status, order.reason) == (CANCELED, EXPIRED)
    assert events == [OrderCanceled(order_id=order.id, customer_id=CUSTOMER, occurred_at=T1, reason=EXPIRED)]


def test_expire_gtc_order_and_executed_day_order_untouched() -> None:
    gtc = reserved(command(price="300"))
    executed = reserved(command(price="310", time_in_force=DAY), MARKET, quote("299.95", "300.05"))
    assert gtc.expire(T1) == [] and executed.expire(T1) == []
    assert (gtc.status, executed.status) == (PENDING, MATCHED)
