"""The account service's HTTP API: deposits, withdrawals, balances and the ledger (requests waiting for an
admin: `oms.account.requests_api`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Annotated, Any, Final, TypeVar

import asyncpg
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from oms.account import commands, store
from oms.account.domain import EntryKind, Problem, Refused
from oms.account.iban import InvalidIban, parse_iban
from oms.account.requests import Stamp
from oms.account.store import Accounts
from oms.kernel.deps import AppSettings, IdempotencyKey, Pool, own_customer, units_of_work
from oms.kernel.errors import ApiError, error_responses
from oms.kernel.http import ExactJSONResponse, ExactNumber, exact_json
from oms.kernel.money import CASH, PositiveDecimal, Symbol
from oms.kernel.paging import COUNT_BOUND, Count, window
from oms.kernel.settings import DepositPolicy, Settings
from oms.kernel.tokens import CurrentUser, Principal
from oms.kernel.unit_of_work import UnitOfWork, UnitOfWorkFactory

router = APIRouter(prefix="/api/v1", tags=["accounts"])


class DepositBody(BaseModel):
    customerId: uuid.UUID
    assetName: Symbol
    totalSize: PositiveDecimal
    usableSize: PositiveDecimal = Field(description="must equal totalSize")


class WithdrawBody(BaseModel):
    customerId: uuid.UUID
    amount: PositiveDecimal
    iban: str


class Id(BaseModel):
    id: str


class Requested(BaseModel):
    """A deposit or withdrawal waiting for an admin's decision (or, for a withdrawal, PAID at once)."""

    id: str
    status: str


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
    totalAfter: ExactNumber  # the balance's running figures just after this movement
    usableAfter: ExactNumber


class LedgerPage(BaseModel):
    entries: list[LedgerEntryView]
    nextCursor: str | None
    prevCursor: str | None = None


class LedgerCount(BaseModel):
    count: int
    atLeast: bool


UnitsOfWork = Annotated[UnitOfWorkFactory[Accounts], Depends(units_of_work)]
T = TypeVar("T")
_STATUS: Final = {Problem.INVALID: 422, Problem.FOUR_EYES: 403}  # other refusals: 409, a state's conflict


def requested(meaning: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI answer 202: a request waiting for an admin."""
    return {202: {"model": Requested, "description": f"Requested: {meaning}"}}


def done(outcome: T | Refused | None, what: str = "request") -> T:
    """What a command did, or the API's refusal: 404 when there is no such `what`."""
    if outcome is None:
        raise ApiError(404, f"no such {what}")
    if isinstance(outcome, Refused):
        raise ApiError(_STATUS.get(outcome.problem, 409), outcome.message)
    return outcome


def stamp(user: Principal) -> Stamp:
    """`user`, now."""
    return Stamp(uuid.UUID(user.user_id), datetime.now(UTC))


def answered(answer: dict[str, Any]) -> ExactJSONResponse:
    """A request's answer: 202 while it waits for an admin's decision."""
    return ExactJSONResponse(answer, 202 if answer.get("status") == "REQUESTED" else 200)


def _credited_at_once(user: Principal, body: DepositBody, settings: Settings) -> bool:
    """Whether this deposit is credited at once (else it is a request); 403 when it is not allowed."""
    own_customer(user, body.customerId)
    if user.is_admin:
        return True
    if settings.customer_deposits is DepositPolicy.OFF:
        raise ApiError(403, "deposits are made by an admin")
    if body.assetName != CASH:
        raise ApiError(403, f"customers may deposit only {CASH}; other assets are credited by an admin")
    return settings.customer_deposits is DepositPolicy.INSTANT


@router.post(
    "/assets",
    response_model=Id,
    responses=error_responses(403, 422) | requested("credited once an admin approves it"),
)
async def deposit(
    body: DepositBody,
    user: CurrentUser,
    unit_of_work: UnitsOfWork,
    settings: AppSettings,
    key: IdempotencyKey = None,
) -> ExactJSONResponse:
    """Deposit totalSize (usableSize must equal it): an admin's is credited at once (200, the asset's id); a
    customer's TRY is a request (202 REQUESTED) that changes no balance until an admin approves it, or is
    credited at once or refused as OMS_CUSTOMER_DEPOSITS says."""
    at_once = _credited_at_once(user, body, settings)
    if body.usableSize != body.totalSize:
        raise ApiError(422, "usableSize must equal totalSize: money is made unusable only by reservations")
    request = ("POST", "/api/v1/assets", body.model_dump(mode="json"))
    async with unit_of_work() as tx:
        action = partial(_credit if at_once else _ask, tx, body, stamp(user))
        answer = await tx.idempotency.once(user.user_id, key, request, action)
    return answered(answer)


async def _credit(tx: UnitOfWork[Accounts], body: DepositBody, asked: Stamp) -> dict[str, Any]:
    step = done(await commands.credit_at_once(tx, body.customerId, body.assetName, body.totalSize, asked))
    return {"id": str(step.effect.assets[0].id)}


async def _ask(tx: UnitOfWork[Accounts], body: DepositBody, asked: Stamp) -> dict[str, Any]:
    request = done(await commands.ask_for_deposit(tx, body.customerId, body.assetName, body.totalSize, asked))
    return {"id": str(request.id), "status": request.status.value}


@router.post(
    "/assets/withdraw",
    response_model=Requested,
    responses=error_responses(403, 409, 422) | requested("its amount is held until an admin decides"),
)
async def withdraw(
    body: WithdrawBody,
    user: CurrentUser,
    unit_of_work: UnitsOfWork,
    settings: AppSettings,
    key: IdempotencyKey = None,
) -> ExactJSONResponse:
    """Withdraw usable TRY to a bank account (IBAN, checksum verified): paid at once up to
    OMS_WITHDRAWAL_APPROVAL_THRESHOLD (200 PAID); above it a request (202 REQUESTED) whose amount is held
    until an admin other than the one who asked approves it (paid) or an admin rejects it (released)."""
    own_customer(user, body.customerId)
    try:
        iban = parse_iban(body.iban)
    except InvalidIban as exc:
        raise ApiError(422, str(exc)) from None
    request = ("POST", "/api/v1/assets/withdraw", body.model_dump(mode="json"))
    threshold = settings.withdrawal_approval_threshold
    async with unit_of_work() as tx:
        action = partial(_pay_out, tx, body, iban, stamp(user), threshold)
        answer = await tx.idempotency.once(user.user_id, key, request, action)
    return answered(answer)


async def _pay_out(
    tx: UnitOfWork[Accounts], body: WithdrawBody, iban: str, asked: Stamp, threshold: Decimal
) -> dict[str, Any]:
    step = done(await commands.withdraw(tx, body.customerId, body.amount, iban, asked, threshold=threshold))
    return {"id": str(step.request.id), "status": step.request.status.value}


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


SeqCursor = Annotated[int | None, Query(ge=1, le=2**63 - 1)]


def _entry(r: asyncpg.Record) -> LedgerEntryView:
    return LedgerEntryView(
        seq=r["seq"],
        customerId=r["customer_id"],
        assetName=r["asset_name"],
        kind=EntryKind(r["kind"]),
        deltaTotal=r["delta_total"],
        deltaUsable=r["delta_usable"],
        orderId=r["order_id"],
        reference=r["reference"],
        createdAt=r["created_at"],
        totalAfter=r["total_after"],
        usableAfter=r["usable_after"],
    )


@router.get("/ledger", response_model=LedgerPage, responses=error_responses(403))
async def ledger(
    user: CurrentUser,
    pool: Pool,
    customerId: uuid.UUID | None = None,
    assetName: Symbol | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[SeqCursor, Query(description="nextCursor: the older page")] = None,
    before: Annotated[SeqCursor, Query(description="prevCursor: the newer page")] = None,
) -> ExactJSONResponse:
    """Every balance movement, newest first: deposits, withdrawals, reservations, releases, settlements; each
    with the balance's figures just after it."""
    if cursor is not None and before is not None:
        raise ApiError(422, "give cursor or before, not both")
    customer = own_customer(user, customerId)
    async with pool.acquire() as conn:
        rows = await store.ledger_page(conn, customer, assetName, limit + 1, cursor, before)
        found = window(rows, limit, newer=before is not None, from_cursor=cursor is not None)
        if before is not None and not found.has_newer:  # back at the top: the first page, whole
            rows = await store.ledger_page(conn, customer, assetName, limit + 1, None)
            found = window(rows, limit, newer=False, from_cursor=False)
    cursors = found.cursors(lambda r: str(r["seq"]))
    return exact_json(LedgerPage(entries=[_entry(r) for r in found.rows], **cursors))


@router.get("/ledger/count", response_model=LedgerCount, responses=error_responses(403))
async def count_ledger(
    user: CurrentUser, pool: Pool, customerId: uuid.UUID | None = None, assetName: Symbol | None = None
) -> LedgerCount:
    """How many movements the same filters list: exact up to 10,000, then `atLeast`."""
    async with pool.acquire() as conn:
        counted = await store.ledger_count(conn, own_customer(user, customerId), assetName, COUNT_BOUND)
    return LedgerCount(**Count.of(counted).view())
