"""The admins' audit trail (docs/decisions/016): who did what to whom, when, append-only in auth's database.

Auth writes its own admin actions (creating users, disabling, enabling, new passwords) in the transaction
that makes them; the back office adds the actions it carried out at the other services (deposits,
withdrawals, decisions, orders placed, cancelled or matched for a customer). The actor is always the caller's
token, never the body: an admin can add entries only as themselves, and nobody can change or remove one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from oms.auth.domain import User
from oms.kernel.deps import Pool
from oms.kernel.errors import ApiError, error_responses
from oms.kernel.paging import COUNT_BOUND, Count, window
from oms.kernel.tokens import AdminUser, Principal

router = APIRouter(prefix="/admin-trail", tags=["admin trail"])
SeqCursor = Annotated[int | None, Query(ge=1, le=2**63 - 1)]


PLAIN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"  # no control characters (PostgreSQL text holds no NUL)


def plain(min_length: int, max_length: int) -> Any:
    return Field(min_length=min_length, max_length=max_length, pattern=PLAIN)


class Entry(BaseModel):
    """An admin's action for the trail; the actor is the caller."""

    action: Annotated[str, plain(1, 64)]
    targetKind: Annotated[str, plain(1, 32)]
    targetId: Annotated[str, plain(1, 64)]
    targetName: Annotated[str, plain(0, 200)] = ""
    detail: Annotated[str, plain(1, 500)]


class EntryView(Entry):
    seq: int
    at: datetime
    actorId: str
    actorName: str


class Appended(BaseModel):
    seq: int


class EntryPage(BaseModel):
    entries: list[EntryView]
    nextCursor: str | None
    prevCursor: str | None


class Counted(BaseModel):
    count: int
    atLeast: bool


@dataclass(frozen=True)
class TrailFilter:
    """Which entries: by the actor's or the target's name or id, the action, and UTC days (inclusive)."""

    who: str | None = None  # matches the actor or the target, by name or id
    action: str | None = None
    start: date | None = None
    end: date | None = None

    def where(self, args: list[Any]) -> list[str]:
        def arg(value: object) -> str:
            args.append(value)
            return f"${len(args)}"

        clauses = []
        if self.who:
            who = arg(self.who)
            clauses.append(f"({who} IN (actor_name, target_name, target_id) OR actor_id::text = {who})")
        if self.action:
            clauses.append(f"action = {arg(self.action)}")
        if self.start:
            clauses.append(f"at >= {arg(datetime.combine(self.start, time(), UTC))}")
        if self.end and self.end < date.max:
            clauses.append(f"at < {arg(datetime.combine(self.end + timedelta(days=1), time(), UTC))}")
        return clauses


def about_user(user: User, action: str, detail: str) -> Entry:
    """An entry of an admin's action on `user`."""
    return Entry(
        action=action, targetKind="user", targetId=str(user.id), targetName=user.username, detail=detail
    )


async def append(conn: asyncpg.Connection, actor: Principal, entry: Entry) -> int:
    """Add one entry by `actor`; its sequence number."""
    seq: int = await conn.fetchval(
        "INSERT INTO admin_trail (actor_id, actor_name, action, target_kind, target_id, target_name, detail) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
        uuid.UUID(actor.user_id),
        actor.username,
        entry.action,
        entry.targetKind,
        entry.targetId,
        entry.targetName,
        entry.detail,
    )
    return seq


def _view(row: asyncpg.Record) -> EntryView:
    return EntryView(
        seq=row["seq"],
        at=row["at"],
        actorId=str(row["actor_id"]),
        actorName=row["actor_name"],
        action=row["action"],
        targetKind=row["target_kind"],
        targetId=row["target_id"],
        targetName=row["target_name"],
        detail=row["detail"],
    )


async def _fetch(
    conn: asyncpg.Connection, where: TrailFilter, limit: int, cursor: int | None, before: int | None
) -> list[asyncpg.Record]:
    args: list[Any] = []
    clauses = where.where(args)
    if cursor is not None:
        args.append(cursor)
        clauses.append(f"seq < ${len(args)}")
    if before is not None:
        args.append(before)
        clauses.append(f"seq > ${len(args)}")
    args.append(limit)
    order = "ASC" if before is not None else "DESC"
    return list(
        await conn.fetch(
            f"SELECT * FROM admin_trail WHERE {' AND '.join(clauses) or 'true'} "
            f"ORDER BY seq {order} LIMIT ${len(args)}",
            *args,
        )
    )


def trail_filter(
    _: AdminUser,
    who: Annotated[str | None, Query(max_length=200, pattern=PLAIN)] = None,
    action: Annotated[str | None, Query(max_length=64, pattern=PLAIN)] = None,
    startDate: date | None = None,
    endDate: date | None = None,
) -> TrailFilter:
    """The trail's filters (admins only), for the list and the count."""
    if startDate and endDate and startDate > endDate:
        raise ApiError(422, "startDate is after endDate")
    return TrailFilter(who=who or None, action=action or None, start=startDate, end=endDate)


TrailQuery = Annotated[TrailFilter, Depends(trail_filter)]


@router.post("", status_code=201, response_model=Appended, responses=error_responses(403))
async def add_entry(entry: Entry, admin: AdminUser, pool: Pool) -> Appended:
    """Add an action of yours to the trail (admins; the actor is the token's user)."""
    async with pool.acquire() as conn:
        return Appended(seq=await append(conn, admin, entry))


@router.get("", response_model=EntryPage, responses=error_responses(403, 422))
async def list_entries(
    where: TrailQuery,
    pool: Pool,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: SeqCursor = None,
    before: SeqCursor = None,
) -> EntryPage:
    """The trail newest first (admins): `cursor` pages to older entries, `before` to newer ones."""
    if cursor is not None and before is not None:
        raise ApiError(422, "give cursor or before, not both")
    async with pool.acquire() as conn:
        page = window(
            await _fetch(conn, where, limit + 1, cursor, before),
            limit,
            newer=before is not None,
            from_cursor=cursor is not None,
        )
        if before is not None and not page.has_newer:  # back at the top: the first page, whole
            page = window(
                await _fetch(conn, where, limit + 1, None, None), limit, newer=False, from_cursor=False
            )
    cursors = page.cursors(lambda row: str(row["seq"]))
    return EntryPage(entries=[_view(r) for r in page.rows], **cursors)


@router.get("/count", response_model=Counted, responses=error_responses(403, 422))
async def count_entries(where: TrailQuery, pool: Pool) -> Counted:
    """How many entries match (exact up to 10,000; `atLeast` beyond)."""
    args: list[Any] = []
    clauses = where.where(args)
    args.append(COUNT_BOUND + 1)
    async with pool.acquire() as conn:
        counted = await conn.fetchval(
            f"SELECT count(*) FROM (SELECT 1 FROM admin_trail WHERE {' AND '.join(clauses) or 'true'} "
            f"LIMIT ${len(args)}) AS matching",
            *args,
        )
    return Counted(**Count.of(counted).view())
