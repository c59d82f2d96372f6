"""Deposits and withdrawals that wait for an admin: requests as pure state transitions.

A customer's deposit (under `OMS_CUSTOMER_DEPOSITS=request`) is REQUESTED and changes no balance until an
admin approves it (APPROVED: credited, ledger DEPOSIT) or rejects it (REJECTED). A withdrawal above the
approval threshold holds its amount (usable -= amount: a HELD reservation that names the withdrawal, ledger
RESERVE) until an admin approves it (PAID: ledger PAYOUT from the hold) or rejects it (REJECTED: ledger
RELEASE). An approval must come from someone other than the one who asked (four eyes). An admin's deposit, and
a withdrawal up to the threshold, are decided at once by the one who made them.

Every ledger entry of a request names it (`reference` = the request's id), and each request keeps who asked,
who decided, and when. Each function returns the request's new state with the `Effect` to store in the same
unit of work, or a `Refused` saying why nothing happens; a `ValueError` means the caller broke a rule.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Generic, TypeVar

from oms.account.domain import (
    HELD,
    NOTHING,
    SETTLED,
    Asset,
    Effect,
    EntryKind,
    Problem,
    Refused,
    Reservation,
    cash_shortfall,
    deposit,
    deposit_problem,
    held_balance,
    ledger_entry,
    posted,
    release_reservation,
    withdraw,
)
from oms.kernel.money import CASH


class DepositStatus(StrEnum):
    REQUESTED = "REQUESTED"
    APPROVED = "APPROVED"  # credited
    REJECTED = "REJECTED"


class WithdrawalStatus(StrEnum):
    REQUESTED = "REQUESTED"  # its amount is held
    PAID = "PAID"
    REJECTED = "REJECTED"  # its hold released


class Verdict(StrEnum):
    """An admin's decision on a request."""

    APPROVE = "approve"
    REJECT = "reject"


APPROVE, REJECT = Verdict.APPROVE, Verdict.REJECT


@dataclass(frozen=True)
class Stamp:
    """Who asked for, or decided, a request, and when."""

    by: uuid.UUID | None  # None: not recorded (made before there were requests)
    at: datetime


@dataclass(frozen=True)
class Deposit:
    id: uuid.UUID
    customer_id: uuid.UUID
    asset_name: str
    amount: Decimal
    requested: Stamp
    status: DepositStatus = DepositStatus.REQUESTED
    decided: Stamp | None = None


@dataclass(frozen=True)
class Withdrawal:
    """TRY out to a bank account (`iban`), always of the customer's cash."""

    id: uuid.UUID
    customer_id: uuid.UUID
    amount: Decimal
    iban: str
    requested: Stamp
    status: WithdrawalStatus = WithdrawalStatus.REQUESTED
    decided: Stamp | None = None


Request = TypeVar("Request", Deposit, Withdrawal)


@dataclass(frozen=True)
class Step(Generic[Request]):
    """A request's new state and the money that moves with it, to be stored together."""

    request: Request
    effect: Effect = NOTHING


# --- Deposits ----------------------------------------------------------------------------------------------


def request_deposit(
    customer_id: uuid.UUID, asset_name: str, amount: Decimal, asked: Stamp
) -> Deposit | Refused:
    """A deposit waiting for an admin's decision: nothing is credited yet."""
    problem = deposit_problem(asset_name, amount)
    if problem:
        return Refused(Problem.INVALID, problem)
    return Deposit(uuid.uuid4(), customer_id, asset_name, amount, asked)


def deposit_at_once(
    asset: Asset | None, customer_id: uuid.UUID, asset_name: str, amount: Decimal, asked: Stamp
) -> Step[Deposit] | Refused:
    """A deposit credited as it is made (an admin's, or any under the `instant` policy), decided by its
    maker."""
    requested = request_deposit(customer_id, asset_name, amount, asked)
    if isinstance(requested, Refused):
        return requested
    return _credited(requested, asset, asked)


def approve_deposit(request: Deposit, asset: Asset | None, decided: Stamp) -> Step[Deposit] | Refused:
    """REQUESTED -> APPROVED: the amount is credited to `asset` (the customer's balance of it, if any)."""
    return _refusal(request, decided, approving=True) or _credited(request, asset, decided)


def reject_deposit(request: Deposit, decided: Stamp) -> Step[Deposit] | Refused:
    """REQUESTED -> REJECTED: nothing is credited, ever."""
    refused = _refusal(request, decided, approving=False)
    return refused or Step(replace(request, status=DepositStatus.REJECTED, decided=decided))


def _credited(request: Deposit, asset: Asset | None, decided: Stamp) -> Step[Deposit]:
    effect = deposit(
        asset, request.customer_id, request.asset_name, request.amount, reference=str(request.id)
    )
    if effect.refused is not None:
        raise ValueError(f"deposit {request.id} cannot be credited: {effect.refused.message}")
    return Step(replace(request, status=DepositStatus.APPROVED, decided=decided), effect)


# --- Withdrawals -------------------------------------------------------------------------------------------


def request_withdrawal(
    cash: Asset | None,
    customer_id: uuid.UUID,
    amount: Decimal,
    iban: str,
    asked: Stamp,
    *,
    threshold: Decimal,
) -> Step[Withdrawal] | Refused:
    """Up to `threshold`: paid at once from usable TRY (ledger WITHDRAWAL). Above it: REQUESTED, with its
    amount held until an admin decides. Refused when usable TRY is short."""
    request = Withdrawal(uuid.uuid4(), customer_id, amount, iban, asked)
    if amount <= threshold:
        effect = withdraw(cash, amount, reference=str(request.id))
        request = replace(request, status=WithdrawalStatus.PAID, decided=asked)
    else:
        effect = hold(cash, request)
    return effect.refused or Step(request, effect)


def hold(cash: Asset | None, request: Withdrawal) -> Effect:
    """Set the withdrawal's amount aside: usable -= amount, a HELD reservation naming it, ledger RESERVE."""
    refused = cash_shortfall(cash, request.amount)
    if refused is not None:
        return refused
    assert cash is not None  # a missing balance is refused as short
    held = Reservation(
        uuid.uuid4(), None, request.customer_id, CASH, request.amount, withdrawal_id=request.id
    )
    entry = ledger_entry(EntryKind.RESERVE, cash, held.amount, reference=held.reference)
    return Effect(assets=(posted(cash, [entry]),), reservation=held, entries=(entry,))


def pay_out(held: Reservation, cash: Asset | None) -> Effect:
    """HELD -> SETTLED: the held amount leaves the balance (total -= amount, ledger PAYOUT)."""
    if held.status is not HELD:
        raise ValueError(f"reservation {held.id} is {held.status}, not HELD: nothing to pay out")
    cash = held_balance(held, cash)
    entry = ledger_entry(EntryKind.PAYOUT, cash, held.amount, reference=held.reference)
    return Effect(
        assets=(posted(cash, [entry]),), reservation=replace(held, status=SETTLED), entries=(entry,)
    )


def approve_withdrawal(
    request: Withdrawal, held: Reservation | None, cash: Asset | None, decided: Stamp
) -> Step[Withdrawal] | Refused:
    """REQUESTED -> PAID: the held amount is paid out, by decision of someone other than the one who asked."""
    refused = _refusal(request, decided, approving=True)
    if refused:
        return refused
    paid = pay_out(_hold_of(request, held), cash)
    return Step(replace(request, status=WithdrawalStatus.PAID, decided=decided), paid)


def reject_withdrawal(
    request: Withdrawal, held: Reservation | None, cash: Asset | None, decided: Stamp
) -> Step[Withdrawal] | Refused:
    """REQUESTED -> REJECTED: the held amount is usable again (ledger RELEASE)."""
    refused = _refusal(request, decided, approving=False)
    if refused:
        return refused
    released = release_reservation(_hold_of(request, held), cash)
    return Step(replace(request, status=WithdrawalStatus.REJECTED, decided=decided), released)


def _hold_of(request: Withdrawal, held: Reservation | None) -> Reservation:
    # A REQUESTED withdrawal's amount is held from the moment it is asked for until it is decided.
    if held is None or held.withdrawal_id != request.id or held.status is not HELD:
        raise ValueError(f"withdrawal {request.id} is REQUESTED but its amount is not held: {held}")
    return held


# --- Both --------------------------------------------------------------------------------------------------


def _refusal(request: Deposit | Withdrawal, decided: Stamp, *, approving: bool) -> Refused | None:
    """Only a REQUESTED request is decided, once; an approval never by the one who asked (four eyes)."""
    kind = "deposit" if isinstance(request, Deposit) else "withdrawal"
    if request.status != "REQUESTED":
        return Refused(Problem.DECIDED, f"{kind} {request.id} is {request.status}, no longer REQUESTED")
    if approving and decided.by == request.requested.by:
        return Refused(
            Problem.FOUR_EYES, f"four eyes: a {kind} is approved by an admin other than the one who asked"
        )
    return None
