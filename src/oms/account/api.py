"""The account service's HTTP API: deposits, withdrawals, balances and the ledger."""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from oms.account import domain, store
from oms.account.domain import Effect, EntryKind, Problem
from oms.account.iban import InvalidIban, parse_iban
from oms.account.store import Accounts
from oms.kernel.deps import AppSettings, IdempotencyKey, Pool, own_customer, units_of_work
from oms.kernel.errors import ApiError, error_responses
from oms.kernel.http import ExactJSONResponse, ExactNumber, exact_json
from oms.kernel.money import CASH, NonNegativeDecimal, PositiveDecimal, Symbol
from oms.kernel.settings import Settings
from oms.kernel.tokens import CurrentUser, Principal
from oms.kernel.unit_of_work import UnitOfWork, UnitOfWorkFactory

router = APIRouter(prefix="/api/v1", tags=["accounts"])


class DepositRequest(BaseModel):
    customerId: uuid.UUID
    assetName: Symbol
    totalSize: NonNegativeDecimal
    usableSize: NonNegativeDecimal


class WithdrawRequest(BaseModel):
    customerId: uuid.UUID
    amount: PositiveDecimal
    iban: str


class Id(BaseModel):
    id: str


class AssetView(BaseModel):
    id: uuid.UUID
    customerId: uuid.UUID
    assetName: str
    totalSize: ExactNumber
    usableSize: ExactNumber


class AssetList(BaseModel):
    assets: list[AssetView]


class LedgerEntryView(BaseModel):
    seq: int
    customerId: uuid.UUID
    assetName: str
    kind: EntryKind
    deltaTotal: ExactNumber
    deltaUsable: ExactNumber
    orderId: uuid.UUID | None
    reference: str | None
    createdAt: datetime


class LedgerPage(BaseModel):
    entries: list[LedgerEntryView]
    nextCursor: str | None


def _check_refusal(effect: Effect) -> None:
    if effect.refused is not None:
        status = 409 if effect.refused.problem is Problem.INSUFFICIENT else 422
        raise ApiError(status, effect.refused.message)


def _deposit_policy(user: Principal, body: DepositRequest, settings: Settings) -> None:
    own_customer(user, body.customerId)
    if user.is_admin:
        return
    if not settings.customer_deposits:
        raise ApiError(403, "deposits are made by an admin")
    if body.assetName != CASH:
        raise ApiError(403, f"customers may deposit only {CASH}; other assets are credited by an admin")


UnitsOfWork = Annotated[UnitOfWorkFactory[Accounts], Depends(units_of_work)]


@router.post("/assets", response_model=Id, responses=error_responses(403, 422))
async def deposit(
    body: DepositRequest,
    user: CurrentUser,
    unit_of_work: UnitsOfWork,
    settings: AppSettings,
    key: IdempotencyKey = None,
) -> ExactJSONResponse:
    """Deposit: add totalSize (of which usableSize is usable) to the asset, creating it if missing."""
    _deposit_policy(user, body, settings)
    if body.usableSize > body.totalSize:
        raise ApiError(422, "usableSize must not exceed totalSize")
    request = ("POST", "/api/v1/assets", body.model_dump(mode="json"))
    async with unit_of_work() as tx:
        answer = await tx.idempotency.once(user.user_id, key, request, partial(_credit, tx, body, user))
    return ExactJSONResponse(answer)


async def _credit(tx: UnitOfWork[Accounts], body: DepositRequest, user: Principal) -> dict[str, Any]:
    account = (body.customerId, body.assetName)
    balances = await tx.repository.lock_balances([account], create=[account])
    effect = domain.deposit(
        balances.get(account),
        body.customerId,
        body.assetName,
        body.totalSize,
        body.usableSize,
        reference=f"deposit by {user.username}",
    )
    _check_refusal(effect)
    tx.repository.store([effect])
    return {"id": str(effect.assets[0].id)}


@router.post("/assets/withdraw", response_model=Id, responses=error_responses(403, 409, 422))
async def withdraw(
    body: WithdrawRequest, user: CurrentUser, unit_of_work: UnitsOfWork, key: IdempotencyKey = None
) -> ExactJSONResponse:
    """Withdraw usable TRY to a bank account (IBAN, checksum verified)."""
    own_customer(user, body.customerId)
    try:
        iban = parse_iban(body.iban)
    except InvalidIban as exc:
        raise ApiError(422, str(exc)) from None
    request = ("POST", "/api/v1/assets/withdraw", body.model_dump(mode="json"))
    async with unit_of_work() as tx:
        answer = await tx.idempotency.once(user.user_id, key, request, partial(_pay_out, tx, body, iban))
    return ExactJSONResponse(answer)


async def _pay_out(tx: UnitOfWork[Accounts], body: WithdrawRequest, iban: str) -> dict[str, Any]:
    withdrawal_id = uuid.uuid4()
    cash = (body.customerId, CASH)
    balances = await tx.repository.lock_balances([cash])
    effect = domain.withdraw(balances.get(cash), body.amount, reference=str(withdrawal_id))
    _check_refusal(effect)
    tx.repository.add_withdrawal(withdrawal_id, body.customerId, body.amount, iban)
    tx.repository.store([effect])
    return {"id": str(withdrawal_id)}


@router.get("/assets", response_model=AssetList, responses=error_responses(403))
async def list_assets(
    user: CurrentUser, pool: Pool, customerId: uuid.UUID | None = None, assetName: Symbol | None = None
) -> ExactJSONResponse:
    """Balances: total and usable (total - usable is reserved for pending orders)."""
    async with pool.acquire() as conn:
        assets = await store.balances(conn, own_customer(user, customerId), assetName)
    views = [
        AssetView(
            id=a.id,
            customerId=a.customer_id,
            assetName=a.asset_name,
            totalSize=a.total_size,
            usableSize=a.usable_size,
        )
        for a in assets
    ]
    return exact_json(AssetList(assets=views))


@router.get("/ledger", response_model=LedgerPage, responses=error_responses(403))
async def ledger(
    user: CurrentUser,
    pool: Pool,
    customerId: uuid.UUID | None = None,
    assetName: Symbol | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="nextCursor of the previous page")
    ] = None,
) -> ExactJSONResponse:
    """Every balance movement, newest first: deposits, withdrawals, reservations, releases, settlements."""
    async with pool.acquire() as conn:
        rows = await store.ledger_page(conn, own_customer(user, customerId), assetName, limit + 1, cursor)
    entries = [
        LedgerEntryView(
            seq=r["seq"],
            customerId=r["customer_id"],
            assetName=r["asset_name"],
            kind=EntryKind(r["kind"]),
            deltaTotal=r["delta_total"],
            deltaUsable=r["delta_usable"],
            orderId=r["order_id"],
            reference=r["reference"],
            createdAt=r["created_at"],
        )
        for r in rows[:limit]
    ]
    next_cursor = str(rows[limit - 1]["seq"]) if len(rows) > limit else None
    return exact_json(LedgerPage(entries=entries, nextCursor=next_cursor))
