"""Orders in the order database."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from oms.kernel.money import Side
from oms.kernel.sql import Write, as_columns
from oms.order.domain import Order, OrderStatus

_COLUMNS = "id, customer_id, asset_name, side, size, price, status, reason, reserved, created_at, updated_at"
# The attributes of an `Order` that are those columns.
_FIELDS = (
    "id",
    "customer_id",
    "asset_name",
    "side.value",
    "size",
    "price",
    "status.value",
    "reason",
    "reserved",
    "created_at",
    "updated_at",
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


def adding(*orders: Order) -> Write:
    """The statement that inserts new orders (one whatever their number)."""
    return Write(
        f"INSERT INTO orders ({_COLUMNS}) SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], "
        "$4::text[], $5::numeric[], $6::numeric[], $7::text[], $8::text[], $9::bool[], $10::timestamptz[], "
        "$11::timestamptz[])",
        tuple(as_columns(orders, *_FIELDS)),
    )


async def get(conn: asyncpg.Connection, order_id: uuid.UUID, *, for_update: bool = False) -> Order | None:
    """One order; with `for_update`, row-locked until the transaction ends (cancel and match queue here)."""
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM orders WHERE id = $1{lock}", order_id)
    return _order(row) if row else None


async def lock(conn: asyncpg.Connection, order_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Order]:
    """These orders, by id, row-locked (in id order, so two transactions never deadlock) until the
    transaction ends."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM orders WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
        list(order_ids),
    )
    return {row["id"]: _order(row) for row in rows}


async def save(conn: asyncpg.Connection, *orders: Order) -> None:
    """Write orders' new states; only PENDING rows can change, so a lost race changes nothing (and
    raises)."""
    if not orders:
        return
    status = await conn.execute(
        "UPDATE orders SET status = u.status, reason = u.reason, reserved = u.reserved, "
        "updated_at = u.updated_at FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bool[], "
        "$5::timestamptz[]) AS u(id, status, reason, reserved, updated_at) "
        "WHERE orders.id = u.id AND orders.status = 'PENDING'",
        *as_columns(orders, "id", "status.value", "reason", "reserved", "updated_at"),
    )
    if status != f"UPDATE {len(orders)}":
        raise RuntimeError(f"of orders {[str(o.id) for o in orders]}, some are no longer PENDING")


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


async def page(
    conn: asyncpg.Connection, where: OrderFilter, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> list[Order]:
    """Orders matching `where`, newest first, `limit` of them after the cursor position `after`.
    (created_at, id) keyset paging walks one index whether or not a customer is given."""
    clauses, args = [], []

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

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
    if after is not None:
        clauses.append(f"(created_at, id) < ({arg(after[0])}, {arg(after[1])})")
    condition = " AND ".join(clauses) or "true"
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM orders WHERE {condition} "
        f"ORDER BY created_at DESC, id DESC LIMIT {arg(limit)}",
        *args,
    )
    return [_order(r) for r in rows]
