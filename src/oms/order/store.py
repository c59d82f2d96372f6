"""Orders in the order database: the repository a unit of work hands the handlers, and the API's reads."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from oms.kernel.money import Side
from oms.kernel.sql import Write, columns
from oms.kernel.unit_of_work import Stage
from oms.order.domain import Order, OrderStatus

_COLUMNS = "id, customer_id, asset_name, side, size, price, status, reason, reserved, created_at, updated_at"
_INSERT = (
    f"INSERT INTO orders ({_COLUMNS}) SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], "
    "$4::text[], $5::numeric[], $6::numeric[], $7::text[], $8::text[], $9::bool[], $10::timestamptz[], "
    "$11::timestamptz[])"
)
# Only PENDING rows may change: an order changed meanwhile (a lost race) makes the transaction fail.
_UPDATE = (
    "UPDATE orders SET status = u.status, reason = u.reason, reserved = u.reserved, "
    "updated_at = u.updated_at "
    "FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bool[], $5::timestamptz[]) "
    "AS u(id, status, reason, reserved, updated_at) "
    "WHERE orders.id = u.id AND orders.status = 'PENDING' RETURNING orders.id"
)


def _order(row: asyncpg.Record) -> Order:
    return Order(
        id=row["id"],
        customer_id=row["customer_id"],
        asset_name=row["asset_name"],
        side=Side(row["side"]),
        size=row["size"],
        price=row["price"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        status=OrderStatus(row["status"]),
        reason=row["reason"],
        reserved=row["reserved"],
    )


def _row(o: Order) -> tuple[object, ...]:
    """An order as the columns of `_COLUMNS`."""
    return (
        o.id,
        o.customer_id,
        o.asset_name,
        o.side.value,
        o.size,
        o.price,
        o.status.value,
        o.reason,
        o.reserved,
        o.created_at,
        o.updated_at,
    )


def _change(o: Order) -> tuple[object, ...]:
    """What `_UPDATE` writes of an order."""
    return (o.id, o.status.value, o.reason, o.reserved, o.updated_at)


class Orders:
    """The orders of a unit of work: reads at once, writes staged (see `oms.kernel.unit_of_work`)."""

    def __init__(self, conn: asyncpg.Connection, stage: Stage) -> None:
        self._conn = conn
        self._stage = stage

    async def get(self, order_id: uuid.UUID, *, for_update: bool = False) -> Order | None:
        """One order; with `for_update`, row-locked until the unit ends (cancel and match queue here)."""
        return await get(self._conn, order_id, for_update=for_update)

    async def lock(self, order_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Order]:
        """These orders, by id, row-locked (in id order, so two units never deadlock)."""
        rows = await self._conn.fetch(
            f"SELECT {_COLUMNS} FROM orders WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
            sorted(set(order_ids)),
        )
        return {row["id"]: _order(row) for row in rows}

    def add(self, *orders: Order) -> None:
        """Insert new orders (one statement whatever their number)."""
        if orders:
            self._stage(Write(_INSERT, tuple(columns(map(_row, orders)))))

    def save(self, *orders: Order) -> None:
        """Write orders' new states; only PENDING rows may change (else the unit fails: `WriteConflict`)."""
        if orders:
            self._stage(Write(_UPDATE, tuple(columns(map(_change, orders))), rows=len(orders)))


async def get(conn: asyncpg.Connection, order_id: uuid.UUID, *, for_update: bool = False) -> Order | None:
    """One order (for the API's reads, outside a unit of work too)."""
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM orders WHERE id = $1{lock}", order_id)
    return _order(row) if row else None


@dataclass(frozen=True)
class OrderFilter:
    customer_id: uuid.UUID | None = None
    start: datetime | None = None
    end: datetime | None = None  # exclusive
    status: OrderStatus | None = None
    asset_name: str | None = None
    side: Side | None = None


class InvalidCursor(ValueError):
    pass


def encode_cursor(order: Order) -> str:
    return base64.urlsafe_b64encode(f"{order.created_at.isoformat()}|{order.id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        created, order_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(created), uuid.UUID(order_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("invalid cursor") from exc


def _conditions(where: OrderFilter, args: list[object]) -> list[str]:
    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    clauses = []
    if where.customer_id is not None:
        clauses.append(f"customer_id = {arg(where.customer_id)}")
    if where.start is not None:
        clauses.append(f"created_at >= {arg(where.start)}")
    if where.end is not None:
        clauses.append(f"created_at < {arg(where.end)}")
    if where.status is not None:
        clauses.append(f"status = {arg(where.status.value)}")
    if where.asset_name is not None:
        clauses.append(f"asset_name = {arg(where.asset_name)}")
    if where.side is not None:
        clauses.append(f"side = {arg(where.side.value)}")
    return clauses


async def page(
    conn: asyncpg.Connection,
    where: OrderFilter,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> list[Order]:
    """Orders matching `where`: newest first after the cursor position `after`, or (`before`) oldest first
    from just after that position, `limit` of them. (created_at, id) keyset paging walks one index whether or
    not a customer is given."""
    args: list[object] = []
    clauses = _conditions(where, args)
    if after is not None:
        args += list(after)
        clauses.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
    order = "DESC"
    if before is not None:
        args += list(before)
        clauses.append(f"(created_at, id) > (${len(args) - 1}, ${len(args)})")
        order = "ASC"
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM orders WHERE {' AND '.join(clauses) or 'true'} "
        f"ORDER BY created_at {order}, id {order} LIMIT ${len(args)}",
        *args,
    )
    return [_order(r) for r in rows]


async def count(conn: asyncpg.Connection, where: OrderFilter, bound: int) -> int:
    """How many orders match `where`, counting no further than `bound + 1`."""
    args: list[object] = []
    clauses = _conditions(where, args)
    args.append(bound + 1)
    counted: int = await conn.fetchval(
        f"SELECT count(*) FROM (SELECT 1 FROM orders WHERE {' AND '.join(clauses) or 'true'} "
        f"LIMIT ${len(args)}) AS matching",
        *args,
    )
    return counted


# --- What operators read (audit, chaos, bench): the whole table or its counts ------------------------------


async def all_orders(conn: asyncpg.Connection) -> list[Order]:
    """Every order."""
    return [_order(r) for r in await conn.fetch(f"SELECT {_COLUMNS} FROM orders")]


async def by_ids(conn: asyncpg.Connection, order_ids: Iterable[uuid.UUID | str]) -> list[Order]:
    """These orders (those that exist)."""
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM orders WHERE id = ANY($1::uuid[])", list(order_ids))
    return [_order(r) for r in rows]


async def pending_count(conn: asyncpg.Connection) -> int:
    """How many orders are PENDING (a partial index counts them)."""
    count: int = await conn.fetchval("SELECT count(*) FROM orders WHERE status = 'PENDING'")
    return count
