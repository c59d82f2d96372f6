"""Deposits and withdrawals in the account database: their rows read and written (for the `Accounts`
repository), and the lists the API and operators read."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Generic, TypeVar

import asyncpg

from oms.account.requests import Deposit, DepositStatus, Stamp, Withdrawal, WithdrawalStatus
from oms.kernel.paging import window
from oms.kernel.sql import Write

_DEPOSIT = (
    "seq, id, customer_id, asset_name, amount, status, requested_by, requested_at, decided_by, decided_at"
)
_WITHDRAWAL = (
    "seq, id, customer_id, amount, iban, status, requested_by, created_at AS requested_at, decided_by, "
    "decided_at"
)
_ADD_DEPOSIT = (
    "INSERT INTO deposits (id, customer_id, asset_name, amount, status, requested_by, requested_at, "
    "decided_by, decided_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)
_ADD_WITHDRAWAL = (
    "INSERT INTO withdrawals (id, customer_id, amount, iban, status, requested_by, created_at, decided_by, "
    "decided_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)
# A decision is taken once: only on a row still REQUESTED (one row, or the unit fails).
_DECIDE = (
    "UPDATE {table} SET status = $2, decided_by = $3, decided_at = $4 WHERE id = $1 AND status = 'REQUESTED' "
    "RETURNING 1"
)


async def locked_deposit(conn: asyncpg.Connection, deposit_id: uuid.UUID) -> Deposit | None:
    """The deposit, row-locked until the transaction ends."""
    row = await conn.fetchrow(f"SELECT {_DEPOSIT} FROM deposits WHERE id = $1 FOR UPDATE", deposit_id)
    return _deposit(row) if row else None


async def locked_withdrawal(conn: asyncpg.Connection, withdrawal_id: uuid.UUID) -> Withdrawal | None:
    """The withdrawal, row-locked until the transaction ends."""
    row = await conn.fetchrow(
        f"SELECT {_WITHDRAWAL} FROM withdrawals WHERE id = $1 FOR UPDATE", withdrawal_id
    )
    return _withdrawal(row) if row else None


def adding(request: Deposit | Withdrawal) -> Write:
    """The statement that stores a new deposit or withdrawal."""
    stamps = (request.status.value, request.requested.by, request.requested.at, *_decided(request))
    if isinstance(request, Deposit):
        deposit = (request.id, request.customer_id, request.asset_name, request.amount)
        return Write(_ADD_DEPOSIT, (*deposit, *stamps))
    return Write(_ADD_WITHDRAWAL, (request.id, request.customer_id, request.amount, request.iban, *stamps))


def deciding(request: Deposit | Withdrawal) -> Write:
    """The statement that stores the decision on a request that was REQUESTED."""
    if request.decided is None:
        raise ValueError(f"{request.id} is not decided")
    table = "deposits" if isinstance(request, Deposit) else "withdrawals"
    return Write(_DECIDE.format(table=table), (request.id, request.status.value, *_decided(request)), rows=1)


def _decided(request: Deposit | Withdrawal) -> tuple[uuid.UUID | None, datetime | None]:
    return (request.decided.by, request.decided.at) if request.decided else (None, None)


def _stamps(row: asyncpg.Record) -> tuple[Stamp, Stamp | None]:
    """Who asked and when; who decided and when, if it was decided."""
    decided = Stamp(row["decided_by"], row["decided_at"]) if row["decided_at"] else None
    return Stamp(row["requested_by"], row["requested_at"]), decided


def _deposit(row: asyncpg.Record) -> Deposit:
    asked, decided = _stamps(row)
    status = DepositStatus(row["status"])
    return Deposit(row["id"], row["customer_id"], row["asset_name"], row["amount"], asked, status, decided)


def _withdrawal(row: asyncpg.Record) -> Withdrawal:
    asked, decided = _stamps(row)
    status = WithdrawalStatus(row["status"])
    return Withdrawal(row["id"], row["customer_id"], row["amount"], row["iban"], asked, status, decided)


# --- The lists ---------------------------------------------------------------------------------------------

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """Requests newest first, and the cursors of the next older and newer pages, if there are any."""

    items: list[T]
    next_cursor: int | None
    prev_cursor: int | None = None


@dataclass(frozen=True)
class Where:
    """Which requests: of one customer or all, of one status or any; a page older than `after` (a seq) or
    newer than `before`."""

    customer_id: uuid.UUID | None
    status: DepositStatus | WithdrawalStatus | None
    after: int | None = None
    before: int | None = None


async def deposits_page(conn: asyncpg.Connection, where: Where, limit: int) -> Page[Deposit]:
    """Deposits newest first."""
    return await _page(conn, "deposits", _DEPOSIT, _deposit, where, limit)


async def withdrawals_page(conn: asyncpg.Connection, where: Where, limit: int) -> Page[Withdrawal]:
    """Withdrawals newest first."""
    return await _page(conn, "withdrawals", _WITHDRAWAL, _withdrawal, where, limit)


async def _page(
    conn: asyncpg.Connection,
    table: str,
    columns: str,
    make: Callable[[asyncpg.Record], T],
    where: Where,
    limit: int,
) -> Page[T]:
    newer = where.before is not None
    order, position = ("ASC", "seq > $3") if newer else ("DESC", "($3::bigint IS NULL OR seq < $3)")
    query = (
        f"SELECT {columns} FROM {table} WHERE ($1::uuid IS NULL OR customer_id = $1) "
        f"AND ($2::text IS NULL OR status = $2) AND {position} ORDER BY seq {order} LIMIT $4"
    )
    rows = await conn.fetch(query, where.customer_id, where.status, where.before or where.after, limit + 1)
    found = window(rows, limit, newer=newer, from_cursor=where.after is not None)
    if newer and not found.has_newer:  # back at the top: the first page, whole
        return await _page(conn, table, columns, make, replace(where, before=None), limit)
    older = found.rows[-1]["seq"] if found.has_older and found.rows else None
    newest = found.rows[0]["seq"] if found.has_newer and found.rows else None
    return Page([make(r) for r in found.rows], older, newest)


async def count(conn: asyncpg.Connection, table: str, where: Where, bound: int) -> int:
    """How many deposits or withdrawals (`table`) match, counting no further than `bound + 1`."""
    counted: int = await conn.fetchval(
        f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE ($1::uuid IS NULL OR customer_id = $1) "
        "AND ($2::text IS NULL OR status = $2) LIMIT $3) AS matching",
        where.customer_id,
        where.status,
        bound + 1,
    )
    return counted


async def all_deposits(conn: asyncpg.Connection) -> list[Deposit]:
    """Every deposit, requested or credited at once, oldest first (audit, chaos)."""
    return [_deposit(r) for r in await conn.fetch(f"SELECT {_DEPOSIT} FROM deposits ORDER BY seq")]


async def all_withdrawals(conn: asyncpg.Connection) -> list[Withdrawal]:
    """Every withdrawal, oldest first (audit, chaos)."""
    return [_withdrawal(r) for r in await conn.fetch(f"SELECT {_WITHDRAWAL} FROM withdrawals ORDER BY seq")]
