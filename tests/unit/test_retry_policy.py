"""When a failed event is delivered again: an order the order service cannot see yet is looked for again at
once (its own commit may not be visible yet), every other failure after the policy's delays."""

from __future__ import annotations

from oms.kernel.consumer import RetryPolicy
from oms.order.handlers import UnknownOrder


def test_an_unknown_order_is_looked_for_again_at_once_then_as_any_failure() -> None:
    policy = RetryPolicy()
    unknown = UnknownOrder("0b0e…")
    assert policy.delay_after(1, unknown) == 0.05
    assert [policy.delay_after(n, unknown) for n in (2, 3, 4, 5)] == [5.0, 15.0, 30.0, 30.0]


def test_other_failures_wait_the_policys_delays() -> None:
    policy = RetryPolicy()
    failure = ConnectionError("database unavailable")
    assert [policy.delay_after(n, failure) for n in (1, 2, 3, 4, 5)] == [1.0, 5.0, 15.0, 30.0, 30.0]
    assert policy.delay_after(1) == 1.0


def test_the_first_retry_is_never_later_than_the_policys_own_first_delay() -> None:
    assert RetryPolicy(nak_delays=(0.01,)).delay_after(1, UnknownOrder("x")) == 0.01
