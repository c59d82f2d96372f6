"""Deposit and withdrawal requests as pure state transitions: request, approve, reject, hold, pay, release,
and the four-eyes rule."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from oms.account.domain import HELD, RELEASED, SETTLED, Asset, EntryKind, Problem, Refused
from oms.account.requests import (
    Deposit,
    DepositStatus,
    Stamp,
    Step,
    Withdrawal,
    WithdrawalStatus,
    approve_deposit,
    approve_withdrawal,
    deposit_at_once,
    hold,
    pay_out,
    reject_deposit,
    reject_withdrawal,
    request_deposit,
    request_withdrawal,
)
from oms.kernel.money import CASH

D = Decimal
CUSTOMER, ADMIN, OTHER_ADMIN = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
IBAN = "TR330006100519786457841326"
THRESHOLD = D(1000)
T0 = datetime(2026, 1, 2, 9, 30, tzinfo=UTC)


def at(seconds: int, by: uuid.UUID) -> Stamp:
    return Stamp(by, T0 + timedelta(seconds=seconds))


def cash(total: str, usable: str | None = None) -> Asset:
    return Asset(uuid.uuid4(), CUSTOMER, CASH, D(total), D(usable or total))


def sizes(asset: Asset) -> tuple[Decimal, Decimal]:
    return asset.total_size, asset.usable_size


def requested_deposit(amount: str = "100") -> Deposit:
    request = request_deposit(CUSTOMER, CASH, D(amount), at(0, CUSTOMER))
    assert isinstance(request, Deposit)
    return request


def step(outcome: Step[Deposit] | Step[Withdrawal] | Refused) -> Step[Deposit] | Step[Withdrawal]:
    assert isinstance(outcome, Step), outcome
    return outcome


def refusal(outcome: Step[Deposit] | Step[Withdrawal] | Refused) -> Problem:
    assert isinstance(outcome, Refused), outcome
    return outcome.problem


# --- deposits ----------------------------------------------------------------------------------------------


def test_request_deposit_of_10_to_the_20_is_refused_as_invalid() -> None:
    """The attack: a customer crediting itself 99999999999999999999.99999999 TRY."""
    asked = request_deposit(CUSTOMER, CASH, D("99999999999999999999.99999999"), at(0, CUSTOMER))
    assert isinstance(asked, Refused)
    assert (asked.problem, asked.message) == (Problem.INVALID, "amount must be at most 1000000000000000")


@pytest.mark.parametrize("amount", ["-0", "0", "0.000000001"])
def test_request_deposit_not_a_positive_amount_of_8_places_is_refused(amount: str) -> None:
    assert refusal(request_deposit(CUSTOMER, CASH, D(amount), at(0, CUSTOMER))) is Problem.INVALID


def test_request_deposit_waits_and_credits_nothing() -> None:
    request = requested_deposit("100.5")
    assert (request.status, request.amount, request.decided) == (DepositStatus.REQUESTED, D("100.5"), None)
    assert request.requested == at(0, CUSTOMER)


def test_approve_deposit_credits_the_amount_with_a_deposit_entry_naming_the_request() -> None:
    before = cash("10")
    done = step(approve_deposit(requested_deposit("100.5"), before, at(5, ADMIN)))
    assert (done.request.status, done.request.decided) == (DepositStatus.APPROVED, at(5, ADMIN))
    (balance,) = done.effect.assets
    assert (balance.id, sizes(balance)) == (before.id, (D("110.5"), D("110.5")))
    (entry,) = done.effect.entries
    assert (entry.kind, entry.delta_total, entry.reference) == (
        EntryKind.DEPOSIT,
        D("100.5"),
        str(done.request.id),
    )


def test_approve_deposit_creates_the_balance_if_missing() -> None:
    done = step(approve_deposit(requested_deposit(), None, at(5, ADMIN)))
    assert sizes(done.effect.assets[0]) == (D(100), D(100))


def test_reject_deposit_moves_no_money_and_keeps_who_decided() -> None:
    done = step(reject_deposit(requested_deposit(), at(5, ADMIN)))
    assert (done.request.status, done.request.decided) == (DepositStatus.REJECTED, at(5, ADMIN))
    assert not done.effect.changed


@pytest.mark.parametrize("first", ["approve", "reject"])
@pytest.mark.parametrize("second", ["approve", "reject"])
def test_deposit_decided_twice_second_is_refused_as_decided(first: str, second: str) -> None:
    decide = {
        "approve": lambda r, s: approve_deposit(r, None, s),
        "reject": reject_deposit,
    }
    decided = step(decide[first](requested_deposit(), at(5, ADMIN)))
    again = decide[second](decided.request, at(6, OTHER_ADMIN))
    assert isinstance(again, Refused)
    assert again.problem is Problem.DECIDED
    assert "no longer REQUESTED" in again.message


def test_approve_deposit_by_the_one_who_asked_is_refused_four_eyes() -> None:
    request = requested_deposit()
    assert refusal(approve_deposit(request, None, at(5, CUSTOMER))) is Problem.FOUR_EYES


def test_deposit_at_once_is_approved_by_its_maker() -> None:
    done = step(deposit_at_once(None, CUSTOMER, "AAPL", D(3), at(0, ADMIN)))
    assert (done.request.status, done.request.requested, done.request.decided) == (
        DepositStatus.APPROVED,
        at(0, ADMIN),
        at(0, ADMIN),
    )
    assert done.effect.entries[0].reference == str(done.request.id)


# --- withdrawals -------------------------------------------------------------------------------------------


def withdrawal(amount: str, balance: Asset, by: uuid.UUID = CUSTOMER) -> Step[Withdrawal]:
    done = request_withdrawal(balance, CUSTOMER, D(amount), IBAN, at(0, by), threshold=THRESHOLD)
    assert isinstance(done, Step)
    return done


def test_withdrawal_up_to_the_threshold_is_paid_at_once() -> None:
    done = withdrawal("1000", cash("1500"))
    assert (done.request.status, done.request.decided) == (WithdrawalStatus.PAID, at(0, CUSTOMER))
    assert sizes(done.effect.assets[0]) == (D(500), D(500))
    (entry,) = done.effect.entries
    assert (entry.kind, entry.reference) == (EntryKind.WITHDRAWAL, str(done.request.id))
    assert done.effect.reservation is None


def test_withdrawal_above_the_threshold_holds_its_amount_until_decided() -> None:
    done = withdrawal("1000.01", cash("1500"))
    request, held = done.request, done.effect.reservation
    assert (request.status, request.decided, request.iban) == (WithdrawalStatus.REQUESTED, None, IBAN)
    assert held is not None
    assert (held.order_id, held.withdrawal_id, held.amount, held.status) == (
        None,
        request.id,
        D("1000.01"),
        HELD,
    )
    assert sizes(done.effect.assets[0]) == (D(1500), D("499.99"))
    (entry,) = done.effect.entries
    assert (entry.kind, entry.reference) == (EntryKind.RESERVE, str(request.id))


@pytest.mark.parametrize("amount", ["500", "5000"])
def test_withdrawal_of_more_than_is_usable_is_refused_either_way(amount: str) -> None:
    refused = request_withdrawal(
        cash("1000", "400"), CUSTOMER, D(amount), IBAN, at(0, CUSTOMER), threshold=D(1)
    )
    assert isinstance(refused, Refused)
    assert refused.message == f"insufficient usable TRY: 400 usable, {amount} requested"


def test_approve_withdrawal_pays_from_the_hold() -> None:
    asked = withdrawal("5000", cash("6000"), by=ADMIN)
    held_cash, held = asked.effect.assets[0], asked.effect.reservation
    paid = step(approve_withdrawal(asked.request, held, held_cash, at(9, OTHER_ADMIN)))
    assert (paid.request.status, paid.request.decided) == (WithdrawalStatus.PAID, at(9, OTHER_ADMIN))
    assert sizes(paid.effect.assets[0]) == (D(1000), D(1000))
    assert paid.effect.reservation is not None and paid.effect.reservation.status is SETTLED
    (entry,) = paid.effect.entries
    assert (entry.kind, entry.delta_total, entry.delta_usable, entry.reference) == (
        EntryKind.PAYOUT,
        D(-5000),
        D(0),
        str(asked.request.id),
    )


def test_approve_withdrawal_by_the_admin_who_asked_is_refused_four_eyes() -> None:
    asked = withdrawal("5000", cash("6000"), by=ADMIN)
    refused = approve_withdrawal(
        asked.request, asked.effect.reservation, asked.effect.assets[0], at(9, ADMIN)
    )
    assert isinstance(refused, Refused)
    assert refused.problem is Problem.FOUR_EYES
    assert "other than the one who asked" in refused.message


def test_reject_withdrawal_releases_the_hold_even_by_the_one_who_asked() -> None:
    asked = withdrawal("5000", cash("6000"), by=ADMIN)
    rejected = step(
        reject_withdrawal(asked.request, asked.effect.reservation, asked.effect.assets[0], at(9, ADMIN))
    )
    assert rejected.request.status is WithdrawalStatus.REJECTED
    assert sizes(rejected.effect.assets[0]) == (D(6000), D(6000))
    assert rejected.effect.reservation is not None and rejected.effect.reservation.status is RELEASED
    (entry,) = rejected.effect.entries
    assert (entry.kind, entry.reference) == (EntryKind.RELEASE, str(asked.request.id))


def test_withdrawal_decided_twice_is_refused_as_decided() -> None:
    asked = withdrawal("5000", cash("6000"))
    paid = step(
        approve_withdrawal(asked.request, asked.effect.reservation, asked.effect.assets[0], at(9, ADMIN))
    )
    for decide in (approve_withdrawal, reject_withdrawal):
        again = decide(paid.request, paid.effect.reservation, paid.effect.assets[0], at(10, OTHER_ADMIN))
        assert refusal(again) is Problem.DECIDED


def test_requested_withdrawal_without_its_hold_raises() -> None:
    asked = withdrawal("5000", cash("6000"))
    with pytest.raises(ValueError, match="not held"):
        approve_withdrawal(asked.request, None, asked.effect.assets[0], at(9, ADMIN))


@pytest.mark.parametrize("decide", [approve_withdrawal, reject_withdrawal])
@pytest.mark.parametrize("whose", ["another withdrawal's", "its own, released"])
def test_a_withdrawal_is_never_decided_on_a_hold_that_is_not_its_own_held_amount(
    decide: Any, whose: str
) -> None:
    asked = withdrawal("5000", cash("12000"))
    other = withdrawal("6000", cash("12000"))
    held = asked.effect.reservation if whose == "its own, released" else other.effect.reservation
    assert held is not None
    if whose == "its own, released":
        held = replace(held, status=RELEASED)
    with pytest.raises(ValueError, match="not held"):
        decide(asked.request, held, asked.effect.assets[0], at(9, OTHER_ADMIN))


def test_hold_and_pay_out_keep_the_balance_equal_to_its_entries() -> None:
    request = withdrawal("5000", cash("6000")).request
    held = hold(cash("6000"), request)
    assert held.reservation is not None
    paid = pay_out(held.reservation, held.assets[0])
    entries = [*held.entries, *paid.entries]
    assert sum(e.delta_total for e in entries) == D(-5000)
    assert sum(e.delta_usable for e in entries) == D(-5000)
    with pytest.raises(ValueError, match="not HELD"):
        pay_out(paid.reservation, paid.assets[0])  # type: ignore[arg-type]


def test_refusals_of_a_decision_name_the_request_and_why() -> None:
    deposit = requested_deposit()
    approved = step(approve_deposit(deposit, None, at(5, ADMIN))).request
    assert reject_deposit(approved, at(6, OTHER_ADMIN)) == Refused(
        Problem.DECIDED, f"deposit {deposit.id} is APPROVED, no longer REQUESTED"
    )
    assert approve_deposit(deposit, None, at(5, CUSTOMER)) == Refused(
        Problem.FOUR_EYES, "four eyes: a deposit is approved by an admin other than the one who asked"
    )
    asked = withdrawal("5000", cash("6000"), by=ADMIN)
    held, balance = asked.effect.reservation, asked.effect.assets[0]
    assert approve_withdrawal(asked.request, held, balance, at(5, ADMIN)) == Refused(
        Problem.FOUR_EYES, "four eyes: a withdrawal is approved by an admin other than the one who asked"
    )
    rejected = step(reject_withdrawal(asked.request, held, balance, at(5, ADMIN))).request
    assert reject_withdrawal(rejected, held, balance, at(6, OTHER_ADMIN)) == Refused(
        Problem.DECIDED, f"withdrawal {rejected.id} is REJECTED, no longer REQUESTED"
    )
