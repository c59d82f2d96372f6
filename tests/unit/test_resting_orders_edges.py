"""The book of resting orders at its edges: time priority that does not depend on order ids, orders gone from
the top, removals of orders that no longer rest, and a batch with orders that cannot rest in its middle."""

from __future__ import annotations

import uuid
from dataclasses import replace

from oms.kernel.money import OrderType, Side
from oms.order.resting import RestingOrders
from tests.unit.test_resting_orders import order, quote


def test_among_equal_limits_the_earlier_order_is_taken_first_whatever_the_ids() -> None:
    earlier = replace(order(Side.BUY, 100, at=0), id=uuid.UUID(int=2))
    later = replace(order(Side.BUY, 100, at=1), id=uuid.UUID(int=1))
    book = RestingOrders()
    book.add([later, earlier])
    assert book.take_crossed(quote(99, 100)) == [earlier.id, later.id]


def test_an_order_gone_from_the_top_is_passed_over() -> None:
    best, next_best = order(Side.BUY, 101), order(Side.BUY, 100)
    book = RestingOrders()
    book.add([best, next_best])
    book.remove([best.id])
    assert not book.crosses(quote(100, "100.5"))  # only the gone order would have been crossed
    assert book.take_crossed(quote(99, 100)) == [next_best.id]


def test_removing_orders_that_do_not_rest_changes_nothing() -> None:
    resting = order(Side.SELL, 101)
    book = RestingOrders()
    book.add([resting])
    book.remove([uuid.uuid4(), resting.id, resting.id])
    assert len(book) == 0 and book.take_crossed(quote(101, 102)) == []


def test_an_order_that_cannot_rest_does_not_stop_the_others_of_its_batch() -> None:
    market = replace(order(Side.BUY, 100), price=None, order_type=OrderType.MARKET)
    resting = order(Side.BUY, 100)
    book = RestingOrders()
    book.add([resting])
    fresh = order(Side.BUY, 99)
    book.add([resting, market, fresh])
    assert (len(book), fresh.id in book) == (2, True)
