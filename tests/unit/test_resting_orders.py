"""The book of resting orders: a quote takes exactly the orders it crosses, best first, and never looks at
the others — 10,000 resting orders on one symbol cost a quote that crosses none of them two glances."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from oms.kernel.market import Quote
from oms.kernel.money import OrderType, Side
from oms.order.domain import Order
from oms.order.resting import RestingOrders

D = Decimal
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def order(side: Side, limit: int | str, symbol: str = "THYAO", at: int = 0) -> Order:
    placed = T0 + timedelta(seconds=at)
    return Order(uuid.uuid4(), uuid.uuid4(), symbol, side, D(10), D(limit), placed, placed, reserved=True)


def quote(bid: int | str, ask: int | str, symbol: str = "THYAO") -> Quote:
    return Quote(symbol=symbol, bid=D(bid), ask=D(ask), last=D(bid), time=T0, sequence=1)


def test_take_crossed_buys_best_limit_first_then_earliest() -> None:
    book = RestingOrders()
    low, high, high_later, other = (
        order(Side.BUY, 98),
        order(Side.BUY, 100),
        order(Side.BUY, 100, at=1),
        order(Side.BUY, 100, symbol="GARAN"),
    )
    book.add([low, high_later, high, other])
    assert book.take_crossed(quote(98, 99)) == [high.id, high_later.id]
    assert (low.id in book, other.id in book, len(book)) == (True, True, 2)


def test_take_crossed_sells_lowest_limit_first() -> None:
    book = RestingOrders()
    cheap, dear = order(Side.SELL, 101), order(Side.SELL, 103)
    book.add([dear, cheap])
    assert book.take_crossed(quote(102, "102.5")) == [cheap.id]
    assert book.take_crossed(quote(102, "102.5")) == []  # the same quote again: nothing left to take


def test_removed_order_never_taken_and_its_entry_compacted_away() -> None:
    book = RestingOrders()
    orders = [order(Side.BUY, 100) for _ in range(200)]
    book.add(orders)
    book.remove(o.id for o in orders[1:])
    book.add([order(Side.BUY, 50)])  # adding compacts once the gone outnumber the resting
    assert book.take_crossed(quote(99, 100)) == [orders[0].id]
    assert len(book) == 1


def test_orders_that_cannot_rest_are_not_added_twice_or_without_a_limit() -> None:
    book = RestingOrders()
    resting = order(Side.BUY, 100)
    market = Order(
        uuid.uuid4(),
        uuid.uuid4(),
        "THYAO",
        Side.BUY,
        D(1),
        None,
        T0,
        T0,
        reserved=True,
        order_type=OrderType.MARKET,
    )
    book.add([resting, resting, market])
    assert len(book) == 1
    assert book.symbols() == {"THYAO"}


@given(
    limits=st.lists(st.tuples(st.sampled_from(list(Side)), st.integers(1, 50)), max_size=40),
    quotes=st.lists(st.tuples(st.integers(1, 50), st.integers(1, 5)), max_size=10),
)
def test_take_crossed_takes_what_a_scan_of_every_order_would(
    limits: list[tuple[Side, int]], quotes: list[tuple[int, int]]
) -> None:
    book = RestingOrders()
    resting = {o.id: o for o in (order(side, limit) for side, limit in limits)}
    book.add(resting.values())
    for bid, spread in quotes:
        q = quote(bid, bid + spread)
        expected = {i for i, o in resting.items() if q.crosses(o.side, o.price)}
        assert book.crosses(q) == bool(expected)
        assert set(book.take_crossed(q)) == expected
        for order_id in expected:
            del resting[order_id]
    assert len(book) == len(resting)


def test_ten_thousand_resting_on_one_symbol_a_hundred_quotes_cost_microseconds() -> None:
    book = RestingOrders()
    book.add(
        order(side, 200 + i % 50 if side is Side.SELL else 100 - i % 50) for i in range(5000) for side in Side
    )
    started = time.perf_counter()
    for i in range(100):
        assert not book.crosses(quote(150 + i % 10, 151 + i % 10))  # inside the spread of the book
    elapsed = time.perf_counter() - started
    assert elapsed < 0.05, f"100 quotes took {elapsed * 1000:.1f} ms"
    assert len(book.take_crossed(quote(99, "99.5"))) == 100  # the BUYs at 100, none of the others
