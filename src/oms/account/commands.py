"""The account service's commands, from its API: deposits, withdrawals and admins' decisions on them. Each
runs inside the caller's unit of work: load and lock, ask the domain (`oms.account.requests`), stage what it
decided — the request and its money, written together when the unit ends. Refusals are returned, and then
nothing is stored."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from decimal import Decimal

from oms.account.domain import Asset, Refused
from oms.account.requests import (
    APPROVE,
    Deposit,
    Stamp,
    Step,
    Verdict,
    Withdrawal,
    approve_deposit,
    approve_withdrawal,
    deposit_at_once,
    reject_deposit,
    reject_withdrawal,
    request_deposit,
    request_withdrawal,
)
from oms.account.store import Accounts
from oms.kernel.money import CASH
from oms.kernel.unit_of_work import UnitOfWork

Tx = UnitOfWork[Accounts]


async def ask_for_deposit(
    tx: Tx, customer_id: uuid.UUID, asset_name: str, amount: Decimal, asked: Stamp
) -> Deposit | Refused:
    """A deposit request, stored REQUESTED: no balance changes."""
    request = request_deposit(customer_id, asset_name, amount, asked)
    if isinstance(request, Deposit):
        tx.repository.add_deposit(request)
    return request


async def credit_at_once(
    tx: Tx, customer_id: uuid.UUID, asset_name: str, amount: Decimal, asked: Stamp
) -> Step[Deposit] | Refused:
    """A deposit credited as it is made (an admin's, or a customer's under the `instant` policy)."""
    key = (customer_id, asset_name)
    balances = await tx.repository.lock_balances([key], create=[key])
    step = deposit_at_once(balances.get(key), customer_id, asset_name, amount, asked)
    if isinstance(step, Step):
        tx.repository.add_deposit(step.request)
    _store(tx, step, balances.values())
    return step


async def decide_deposit(
    tx: Tx, deposit_id: uuid.UUID, verdict: Verdict, decided: Stamp
) -> Step[Deposit] | Refused | None:
    """Approve (credit) or reject a deposit request; None if there is no such deposit."""
    request = await tx.repository.lock_deposit(deposit_id)
    if request is None:
        return None
    balances = {}
    if verdict is APPROVE:
        key = (request.customer_id, request.asset_name)
        balances = await tx.repository.lock_balances([key], create=[key])
        step = approve_deposit(request, balances.get(key), decided)
    else:
        step = reject_deposit(request, decided)
    if isinstance(step, Step):
        tx.repository.decide_deposit(step.request)
    _store(tx, step, balances.values())
    return step


async def withdraw(
    tx: Tx, customer_id: uuid.UUID, amount: Decimal, iban: str, asked: Stamp, *, threshold: Decimal
) -> Step[Withdrawal] | Refused:
    """TRY out: paid at once up to `threshold`, held for an admin's decision above it."""
    key = (customer_id, CASH)
    balances = await tx.repository.lock_balances([key])
    step = request_withdrawal(balances.get(key), customer_id, amount, iban, asked, threshold=threshold)
    if isinstance(step, Step):
        tx.repository.add_withdrawal(step.request)
    _store(tx, step)
    return step


async def decide_withdrawal(
    tx: Tx, withdrawal_id: uuid.UUID, verdict: Verdict, decided: Stamp
) -> Step[Withdrawal] | Refused | None:
    """Approve (pay out) or reject (release) a withdrawal request; None if there is no such withdrawal."""
    request = await tx.repository.lock_withdrawal(withdrawal_id)
    if request is None:
        return None
    held = await tx.repository.lock_hold(withdrawal_id)
    key = (request.customer_id, CASH)
    balances = await tx.repository.lock_balances([key])
    decide = approve_withdrawal if verdict is APPROVE else reject_withdrawal
    step = decide(request, held, balances.get(key), decided)
    if isinstance(step, Step):
        tx.repository.decide_withdrawal(step.request)
    _store(tx, step)
    return step


def _store(tx: Tx, step: Step[Deposit] | Step[Withdrawal] | Refused, created: Iterable[Asset] = ()) -> None:
    """Stage the money a step moves; and take back the balances made for it that nothing was stored in (all
    of them when it was refused)."""
    tx.repository.store([step.effect] if isinstance(step, Step) else [], created)
