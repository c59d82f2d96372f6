"""Deposit and withdrawal requests over HTTP: the lists (customers their own), and admins' decisions —
approve or reject, once, an approval never by the admin who asked (four eyes)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from oms.account import commands, request_store
from oms.account.api import UnitsOfWork, done, stamp
from oms.account.requests import (
    APPROVE,
    REJECT,
    Deposit,
    DepositStatus,
    Stamp,
    Step,
    Verdict,
    Withdrawal,
    WithdrawalStatus,
)
from oms.account.store import Accounts
from oms.kernel.deps import IdempotencyKey, Pool, own_customer
from oms.kernel.errors import ApiError, error_responses
from oms.kernel.http import ExactJSONResponse, ExactNumber, exact_json
from oms.kernel.paging import COUNT_BOUND, Count
from oms.kernel.tokens import AdminUser, CurrentUser
from oms.kernel.unit_of_work import UnitOfWork

router = APIRouter(prefix="/api/v1", tags=["requests"])

Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[int | None, Query(ge=1, le=2**63 - 1, description="nextCursor: the older page")]
Before = Annotated[int | None, Query(ge=1, le=2**63 - 1, description="prevCursor: the newer page")]


class DepositView(BaseModel):
    id: uuid.UUID
    customerId: uuid.UUID
    assetName: str
    amount: ExactNumber
    status: DepositStatus
    requestedBy: uuid.UUID | None
    requestedAt: datetime
    decidedBy: uuid.UUID | None
    decidedAt: datetime | None


class DepositList(BaseModel):
    deposits: list[DepositView]
    nextCursor: str | None
    prevCursor: str | None = None


class WithdrawalView(BaseModel):
    id: uuid.UUID
    customerId: uuid.UUID
    amount: ExactNumber
    iban: str
    status: WithdrawalStatus
    requestedBy: uuid.UUID | None
    requestedAt: datetime
    decidedBy: uuid.UUID | None
    decidedAt: datetime | None


class WithdrawalList(BaseModel):
    withdrawals: list[WithdrawalView]
    nextCursor: str | None
    prevCursor: str | None = None


class RequestCount(BaseModel):
    count: int
    atLeast: bool


class Decided(BaseModel):
    """A request as an admin's decision left it."""

    id: str
    status: str
    decidedBy: str
    decidedAt: str


def _stamps(request: Deposit | Withdrawal) -> dict[str, Any]:
    decided = request.decided
    return {
        "requestedBy": request.requested.by,
        "requestedAt": request.requested.at,
        "decidedBy": decided.by if decided else None,
        "decidedAt": decided.at if decided else None,
    }


def _cursors(page: request_store.Page[Any]) -> dict[str, str | None]:
    def text(seq: int | None) -> str | None:
        return str(seq) if seq is not None else None

    return {"nextCursor": text(page.next_cursor), "prevCursor": text(page.prev_cursor)}


def deposit_filter(
    user: CurrentUser, customerId: uuid.UUID | None = None, status: DepositStatus | None = None
) -> request_store.Where:
    """The deposits' list and count filters: customers see only their own."""
    return request_store.Where(own_customer(user, customerId), status)


def withdrawal_filter(
    user: CurrentUser, customerId: uuid.UUID | None = None, status: WithdrawalStatus | None = None
) -> request_store.Where:
    """The withdrawals' list and count filters: customers see only their own."""
    return request_store.Where(own_customer(user, customerId), status)


DepositQuery = Annotated[request_store.Where, Depends(deposit_filter)]
WithdrawalQuery = Annotated[request_store.Where, Depends(withdrawal_filter)]


def _paged(where: request_store.Where, cursor: int | None, before: int | None) -> request_store.Where:
    if cursor is not None and before is not None:
        raise ApiError(422, "give cursor or before, not both")
    return replace(where, after=cursor, before=before)


@router.get("/deposits", response_model=DepositList, responses=error_responses(403, 422))
async def list_deposits(
    where: DepositQuery, pool: Pool, limit: Limit = 100, cursor: Cursor = None, before: Before = None
) -> ExactJSONResponse:
    """Deposits newest first — requests and those credited at once — with who asked and who decided;
    `cursor` pages to older ones, `before` to newer ones."""
    async with pool.acquire() as conn:
        page = await request_store.deposits_page(conn, _paged(where, cursor, before), limit)
    views = [
        DepositView(
            id=d.id,
            customerId=d.customer_id,
            assetName=d.asset_name,
            amount=d.amount,
            status=d.status,
            **_stamps(d),
        )
        for d in page.items
    ]
    return exact_json(DepositList(deposits=views, **_cursors(page)))


@router.get("/withdrawals", response_model=WithdrawalList, responses=error_responses(403, 422))
async def list_withdrawals(
    where: WithdrawalQuery, pool: Pool, limit: Limit = 100, cursor: Cursor = None, before: Before = None
) -> ExactJSONResponse:
    """Withdrawals newest first — paid at once or requested — with who asked and who decided; `cursor`
    pages to older ones, `before` to newer ones."""
    async with pool.acquire() as conn:
        page = await request_store.withdrawals_page(conn, _paged(where, cursor, before), limit)
    views = [
        WithdrawalView(
            id=w.id,
            customerId=w.customer_id,
            amount=w.amount,
            iban=w.iban,
            status=w.status,
            **_stamps(w),
        )
        for w in page.items
    ]
    return exact_json(WithdrawalList(withdrawals=views, **_cursors(page)))


@router.get("/deposits/count", response_model=RequestCount, responses=error_responses(403, 422))
async def count_deposits(where: DepositQuery, pool: Pool) -> RequestCount:
    """How many deposits the same filters list: exact up to 10,000, then `atLeast`."""
    return await _count(pool, "deposits", where)


@router.get("/withdrawals/count", response_model=RequestCount, responses=error_responses(403, 422))
async def count_withdrawals(where: WithdrawalQuery, pool: Pool) -> RequestCount:
    """How many withdrawals the same filters list: exact up to 10,000, then `atLeast`."""
    return await _count(pool, "withdrawals", where)


async def _count(pool: asyncpg.Pool, table: str, where: request_store.Where) -> RequestCount:
    async with pool.acquire() as conn:
        counted = await request_store.count(conn, table, where, COUNT_BOUND)
    return RequestCount(**Count.of(counted).view())


DECISION_ANSWERS = error_responses(403, 404, 409)


@router.post("/deposits/{deposit_id}/approve", response_model=Decided, responses=DECISION_ANSWERS)
async def approve_deposit(
    deposit_id: uuid.UUID, admin: AdminUser, unit_of_work: UnitsOfWork, key: IdempotencyKey = None
) -> ExactJSONResponse:
    """Credit a REQUESTED deposit (admins; never the one who asked). 409 once it is decided."""
    return await _decide(unit_of_work, admin, key, "deposit", deposit_id, APPROVE)


@router.post("/deposits/{deposit_id}/reject", response_model=Decided, responses=DECISION_ANSWERS)
async def reject_deposit(
    deposit_id: uuid.UUID, admin: AdminUser, unit_of_work: UnitsOfWork, key: IdempotencyKey = None
) -> ExactJSONResponse:
    """Refuse a REQUESTED deposit: nothing is credited (admins). 409 once it is decided."""
    return await _decide(unit_of_work, admin, key, "deposit", deposit_id, REJECT)


@router.post("/withdrawals/{withdrawal_id}/approve", response_model=Decided, responses=DECISION_ANSWERS)
async def approve_withdrawal(
    withdrawal_id: uuid.UUID, admin: AdminUser, unit_of_work: UnitsOfWork, key: IdempotencyKey = None
) -> ExactJSONResponse:
    """Pay a REQUESTED withdrawal out of its hold: admins other than the one who asked (four eyes: 403).
    409 once it is decided."""
    return await _decide(unit_of_work, admin, key, "withdrawal", withdrawal_id, APPROVE)


@router.post("/withdrawals/{withdrawal_id}/reject", response_model=Decided, responses=DECISION_ANSWERS)
async def reject_withdrawal(
    withdrawal_id: uuid.UUID, admin: AdminUser, unit_of_work: UnitsOfWork, key: IdempotencyKey = None
) -> ExactJSONResponse:
    """Refuse a REQUESTED withdrawal: its held amount is usable again (admins). 409 once it is decided."""
    return await _decide(unit_of_work, admin, key, "withdrawal", withdrawal_id, REJECT)


async def _decide(
    unit_of_work: UnitsOfWork,
    admin: AdminUser,
    key: str | None,
    kind: str,
    request_id: uuid.UUID,
    verdict: Verdict,
) -> ExactJSONResponse:
    request = ("POST", f"/api/v1/{kind}s/{request_id}/{verdict.value}", None)
    async with unit_of_work() as tx:
        action = partial(_decision, tx, kind, request_id, verdict, stamp(admin))
        answer = await tx.idempotency.once(admin.user_id, key, request, action)
    return ExactJSONResponse(answer)


async def _decision(
    tx: UnitOfWork[Accounts], kind: str, request_id: uuid.UUID, verdict: Verdict, decided: Stamp
) -> dict[str, Any]:
    decide = commands.decide_deposit if kind == "deposit" else commands.decide_withdrawal
    step: Step[Any] = done(await decide(tx, request_id, verdict, decided), kind)
    return {
        "id": str(step.request.id),
        "status": step.request.status.value,
        "decidedBy": str(decided.by),
        "decidedAt": decided.at.isoformat(),
    }
