from __future__ import annotations

import itertools
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oms.kernel.events import OrderCanceled, OrderCreated, OrderMatched
from oms.kernel.money import Side
from oms.kernel.settings import ExecutionMode
from oms.order.domain import (
    CANCELED,
    MATCHED,
    PENDING,
    TERMINAL,
    TRANSITIONS,
    Order,
    OrderInvalid,
    OrderPlaced,
    OrderStatus,
    PlaceOrder,
    ReleaseRequested,
    TransitionRefused,
    place_order,
    place_order_problems,
)

T0 = datetime(2026, 1, 2, 9, 30, tzinfo=UTC)
T1 = T0 + timedelta(seconds=1)
CUSTOMER = uuid.uuid4()
IMMEDIATE, MANUAL = ExecutionMode.IMMEDIATE, ExecutionMode.MANUAL


def command(**changes: object) -> PlaceOrder:
    fields: dict[str, object] = {
        "customer_id": CUSTOMER,
        "asset_name": "AAPL",
        "side": Side.BUY,
        "size": Decimal("10"),
        "price": Decimal("2.5"),
    }
    fields.update(changes)
    return PlaceOrder(**fields)  # type: ignore[arg-type]


def new_order(**changes: object) -> Order:
    placed = place_order(command(**changes), T0)
    assert isinstance(placed, OrderPlaced)
    return placed.order


def matched(order: Order, at: datetime) -> OrderMatched:
    return OrderMatched(
        order_id=order.id,
        customer_id=order.customer_id,
        occurred_at=at,
        asset_name=order.asset_name,
        side=order.side,
        size=order.size,
        price=order.price,
    )


def canceled(order: Order, reason: str, at: datetime) -> OrderCanceled:
    return OrderCanceled(order_id=order.id, customer_id=order.customer_id, occurred_at=at, reason=reason)


def reserved_order(mode: ExecutionMode = MANUAL) -> Order:
    order = new_order()
    order.reserve_funds_confirmed(mode, T0)
    return order


# --- The table ---------------------------------------------------------------------------------------------


def test_transitions_terminal_statuses_have_no_way_out() -> None:
    assert not [edge for edge in TRANSITIONS if edge[0] in TERMINAL]


def test_transitions_every_edge_starts_pending() -> None:
    assert {edge[0] for edge in TRANSITIONS} == {PENDING}


# --- Placing -----------------------------------------------------------------------------------------------


def test_place_order_valid_command_pending_order_and_created_event() -> None:
    placed = place_order(command(), T0)
    assert isinstance(placed, OrderPlaced)
    order = placed.order
    assert (order.status, order.reserved, order.reason, order.created_at) == (PENDING, False, None, T0)
    assert placed.event == OrderCreated(
        order_id=order.id,
        customer_id=CUSTOMER,
        occurred_at=T0,
        asset_name="AAPL",
        side=Side.BUY,
        size=Decimal("10"),
        price=Decimal("2.5"),
    )


def test_place_order_given_id_used() -> None:
    order_id = uuid.uuid4()
    placed = place_order(command(), T0, order_id)
    assert isinstance(placed, OrderPlaced)
    assert placed.order.id == order_id


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"size": Decimal(0)}, "size must be greater than 0"),
        ({"size": Decimal("-1")}, "size must be greater than 0"),
        ({"size": Decimal("NaN")}, "size must be greater than 0"),
        ({"price": Decimal(0)}, "price must be greater than 0"),
        ({"asset_name": "TRY"}, "TRY is the cash asset and cannot be ordered"),
        ({"asset_name": "aapl"}, "asset name 'aapl' must be"),
    ],
)
def test_place_order_invalid_command_refused_with_message(changes: dict[str, object], problem: str) -> None:
    result = place_order(command(**changes), T0)
    assert isinstance(result, OrderInvalid)
    assert any(p.startswith(problem) for p in result.problems)


def test_place_order_problems_several_faults_all_reported() -> None:
    problems = place_order_problems(command(size=Decimal(0), price=Decimal(0), asset_name="TRY"))
    assert len(problems) == 3


def test_order_cost_exact_product() -> None:
    assert new_order(size=Decimal("0.00000001"), price=Decimal("0.00000003")).cost == Decimal("3E-16")


# --- Funds reserved ----------------------------------------------------------------------------------------


def test_reserve_funds_confirmed_immediate_mode_matched_at_limit_price() -> None:
    order = new_order()
    events = order.reserve_funds_confirmed(IMMEDIATE, T1)
    assert (order.status, order.reserved, order.updated_at) == (MATCHED, True, T1)
    assert events == [matched(order, T1)]


def test_reserve_funds_confirmed_manual_mode_pending_and_reserved() -> None:
    order = new_order()
    assert order.reserve_funds_confirmed(MANUAL, T1) == []
    assert (order.status, order.reserved, order.updated_at) == (PENDING, True, T1)


@pytest.mark.parametrize("mode", list(ExecutionMode))
def test_reserve_funds_confirmed_duplicate_nothing_more(mode: ExecutionMode) -> None:
    order = new_order()
    order.reserve_funds_confirmed(mode, T0)
    status = order.status
    assert order.reserve_funds_confirmed(mode, T1) == []
    assert (order.status, order.updated_at) == (status, T0)


def test_reserve_funds_confirmed_canceled_order_release_requested() -> None:
    order = new_order()
    order.cancel("changed my mind", T0)
    events = order.reserve_funds_confirmed(IMMEDIATE, T1)
    assert events == [
        ReleaseRequested(order_id=order.id, customer_id=CUSTOMER, occurred_at=T1, reason="changed my mind")
    ]
    assert (order.status, order.reserved, order.updated_at) == (CANCELED, False, T0)


def test_reserve_funds_confirmed_canceled_order_without_a_recorded_reason_released_as_canceled() -> None:
    order = replace(new_order(), status=CANCELED, reason=None)  # a row no reason was written for
    (release,) = order.reserve_funds_confirmed(IMMEDIATE, T1)
    assert isinstance(release, ReleaseRequested) and release.reason == "order canceled"


# --- Funds rejected ----------------------------------------------------------------------------------------


def test_reserve_funds_rejected_pending_order_canceled_with_reason() -> None:
    order = new_order()
    events = order.reserve_funds_rejected("insufficient usable TRY", T1)
    assert (order.status, order.reason) == (CANCELED, "insufficient usable TRY")
    assert events == [canceled(order, "insufficient usable TRY", T1)]


def test_reserve_funds_rejected_already_canceled_nothing_more() -> None:
    order = new_order()
    order.cancel("by customer", T0)
    assert order.reserve_funds_rejected("order canceled before its funds were reserved", T1) == []
    assert order.reason == "by customer"


def test_reserve_funds_rejected_after_reservation_ignored() -> None:
    order = reserved_order(MANUAL)
    assert order.reserve_funds_rejected("late", T1) == []
    assert (order.status, order.reserved) == (PENDING, True)


def test_reserve_funds_rejected_matched_order_unchanged() -> None:
    order = reserved_order(IMMEDIATE)
    assert order.reserve_funds_rejected("late", T1) == []
    assert order.status is MATCHED


# --- Commands: match and cancel ----------------------------------------------------------------------------


def test_match_reserved_pending_order_matched() -> None:
    order = reserved_order(MANUAL)
    events = order.match(T1)
    assert order.status is MATCHED
    assert events == [matched(order, T1)]


def test_match_unreserved_order_refused() -> None:
    order = new_order()
    refused = order.match(T1)
    assert refused == TransitionRefused(
        order.id, PENDING, MATCHED, "order cannot be matched before its funds are reserved"
    )
    assert order.status is PENDING


@pytest.mark.parametrize("terminal", [MATCHED, CANCELED])
def test_match_terminal_order_refused_naming_status(terminal: OrderStatus) -> None:
    order = terminal_order(terminal)
    refused = order.match(T1)
    assert isinstance(refused, TransitionRefused)
    assert (refused.current, refused.message) == (terminal, f"order is already {terminal}")


def test_cancel_pending_order_canceled_with_reason() -> None:
    order = new_order()
    events = order.cancel("canceled by customer", T1)
    assert (order.status, order.reason, order.updated_at) == (CANCELED, "canceled by customer", T1)
    assert events == [canceled(order, "canceled by customer", T1)]


def test_cancel_reserved_pending_order_canceled() -> None:
    order = reserved_order(MANUAL)
    assert order.cancel("by admin", T1) == [canceled(order, "by admin", T1)]


@pytest.mark.parametrize("terminal", [MATCHED, CANCELED])
def test_cancel_terminal_order_refused_naming_status(terminal: OrderStatus) -> None:
    order = terminal_order(terminal)
    before = (order.status, order.reason, order.updated_at)
    refused = order.cancel("again", T1)
    assert isinstance(refused, TransitionRefused)
    assert (refused.current, refused.requested) == (terminal, CANCELED)
    assert terminal.value in refused.message
    assert (order.status, order.reason, order.updated_at) == before


def terminal_order(status: OrderStatus) -> Order:
    order = reserved_order(IMMEDIATE) if status is MATCHED else new_order()
    if status is CANCELED:
        order.cancel("first", T0)
    return order


# --- Any sequence ------------------------------------------------------------------------------------------

OPERATIONS = ["match", "cancel", "reserved", "rejected"]


def apply(order: Order, operation: str, mode: ExecutionMode, now: datetime) -> object:
    if operation == "match":
        return order.match(now)
    if operation == "cancel":
        return order.cancel("cancel", now)
    if operation == "reserved":
        return order.reserve_funds_confirmed(mode, now)
    return order.reserve_funds_rejected("rejected", now)


@given(st.lists(st.sampled_from(OPERATIONS), max_size=12), st.sampled_from(list(ExecutionMode)))
def test_order_any_sequence_follows_table_and_terminal_never_changes(
    operations: list[str], mode: ExecutionMode
) -> None:
    order = new_order()
    for step, operation in enumerate(operations):
        before = (order.status, order.reason, order.reserved)
        result = apply(order, operation, mode, T0 + timedelta(seconds=step + 1))
        if before[0] in TERMINAL or isinstance(result, TransitionRefused):
            assert (order.status, order.reason, order.reserved) == before
        if before[0] is not order.status:
            assert (before[0], order.status) in TRANSITIONS
        assert order.reserved or order.status is not MATCHED  # matched only once funds were reserved
        if isinstance(result, list):
            assert [type(e) for e in result] == expected_events(operation, before[0], order.status)


def expected_events(operation: str, before: OrderStatus, after: OrderStatus) -> list[type]:
    """A change to MATCHED or CANCELED is announced once; funds reserved for a canceled order go back."""
    if before is PENDING and after is MATCHED:
        return [OrderMatched]
    if before is PENDING and after is CANCELED:
        return [OrderCanceled]
    return [ReleaseRequested] if operation == "reserved" and after is CANCELED else []


@given(st.permutations(OPERATIONS), st.sampled_from(list(ExecutionMode)))
def test_order_each_order_announces_its_end_once(operations: list[str], mode: ExecutionMode) -> None:
    order = new_order()
    events = []
    for operation in itertools.chain(operations, operations):  # every operation delivered twice
        result = apply(order, operation, mode, T1)
        if isinstance(result, list):
            events.extend(result)
    endings = [
        e for e in events if isinstance(e, OrderMatched | OrderCanceled) and type(e) is not ReleaseRequested
    ]
    assert len(endings) == (1 if order.status in TERMINAL else 0)
