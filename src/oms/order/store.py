"""Orders in the order database: the repository a unit of work hands the handlers, and the API's reads."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import asyncpg

from oms.kernel.money import OrderType, Side, TimeInForce
from oms.kernel.sql import Write, columns
from oms.kernel.unit_of_work import Stage
from oms.order.domain import Order, OrderStatus

_COLUMNS = (
    "id, customer_id, asset_name, side, size, price, status, reason, reserved, created_at, updated_at, "
    "order_type, time_in_force, reserve_price, executed_price"
)
_INSERT = (
    f"INSERT INTO orders ({_COLUMNS}) SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], "
    "$4::text[], $5::numeric[], $6::numeric[], $7::text[], $8::text[], $9::bool[], $10::timestamptz[], "
    "$11::timestamptz[], $12::text[], $13::text[], $14::numeric[], $15::numeric[])"
)
# Only PENDING rows may change: an order changed meanwhile (a lost race) makes the transaction fail.
_UPDATE = (
    "UPDATE orders SET status = u.status, reason = u.reason, reserved = u.reserved, "
    "updated_at = u.updated_at, executed_price = u.executed_price "
    "FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bool[], $5::timestamptz[], $6::numeric[]) "
    "AS u(id, status, reason, reserved, updated_at, executed_price) "
    "WHERE orders.id = u.id AND orders.status = 'PENDING' RETURNING orders.id"
)


# Every replica's order streams follow the orders' changes through PostgreSQL's notifications (delivered at
# commit, to every listening connection): "<order id> <customer id>" per order, comma-separated, one
# notification per chunk (a payload holds at most 8,000 bytes). A notifying transaction holds a cluster-wide
# lock through its commit, so they are written only while some stream is open (order/stream.py).
CHANGES_CHANNEL: Final = "oms_order_changes"
_PER_NOTIFICATION: Final = 100
_NOTIFY = f"SELECT pg_notify('{CHANGES_CHANNEL}', p) FROM unnest($1::text[]) AS p"


def changes_notified(orders: Sequence[Order]) -> Write:
    """The notifications of these orders' changes, to write with them. (A CTE that only reads runs only if
    the statement reads it: the row count it must have makes it read.)"""
    entries = [f"{o.id} {o.customer_id}" for o in orders]
    chunks = [",".join(entries[i : i + _PER_NOTIFICATION]) for i in range(0, len(entries), _PER_NOTIFICATION)]
    return Write(_NOTIFY, (chunks,), rows=len(chunks))


def changed_orders(payload: str) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """The (order id, customer id) pairs of a notification on `CHANGES_CHANNEL`."""
    pairs = (entry.split(" ") for entry in payload.split(",") if entry)
    return [(uuid.UUID(order_id), uuid.UUID(customer_id)) for order_id, customer_id in pairs]


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
        order_type=OrderType(row["order_type"]),
        time_in_force=TimeInForce(row["time_in_force"]),
        reserve_price=row["reserve_price"],
        executed_price=row["executed_price"],
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
        o.order_type.value,
        o.time_in_force.value,
        o.reserve_price,
        o.executed_price,
    )


def _change(o: Order) -> tuple[object, ...]:
    """What `_UPDATE` writes of an order."""
    return (o.id, o.status.value, o.reason, o.reserved, o.updated_at, o.executed_price)


class Orders:
    """The orders of a unit of work: reads at once, writes staged (see `oms.kernel.unit_of_work`); their
    changes notified while `notify()` says some order stream is open."""

    def __init__(
        self, conn: asyncpg.Connection, stage: Stage, notify: Callable[[], bool] = lambda: True
    ) -> None:
        self._conn = conn
        self._stage = stage
        self._notify = notify

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

    async def lock_day_orders(self, placed_before: datetime, limit: int) -> list[Order]:
        """Up to `limit` PENDING DAY orders placed before `placed_before`, row-locked: the close expires them.
        A replica that waited for the locks finds the rows changed, and skips them."""
        rows = await self._conn.fetch(
            f"SELECT {_COLUMNS} FROM orders WHERE status = 'PENDING' AND time_in_force = 'DAY' "
            "AND created_at < $1 ORDER BY id LIMIT $2 FOR UPDATE",
            placed_before,
            limit,
        )
        return [_order(row) for row in rows]

    def add(self, *orders: Order) -> None:
        """Insert new orders (one statement whatever their number)."""
        if orders:
            self._stage(Write(_INSERT, tuple(columns(map(_row, orders)))))
            self._notify_changes(orders)

    def save(self, *orders: Order) -> None:
        """Write orders' new states; only PENDING rows may change (else the unit fails: `WriteConflict`)."""
        if orders:
            self._stage(Write(_UPDATE, tuple(columns(map(_change, orders))), rows=len(orders)))
            self._notify_changes(orders)

    def _notify_changes(self, orders: Sequence[Order]) -> None:
        if self._notify():
            self._stage(changes_notified(orders))


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


async def reserved_pending(conn: asyncpg.Connection, changed_since: datetime | None = None) -> list[Order]:
    """The PENDING orders whose funds are reserved (changed at or after `changed_since`): what waits for the
    market or an admin. The partial index of PENDING orders bounds the scan."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM orders WHERE status = 'PENDING' AND reserved "
        "AND ($1::timestamptz IS NULL OR updated_at >= $1)",
        changed_since,
    )
    return [_order(r) for r in rows]


async def pending_count(conn: asyncpg.Connection) -> int:
    """How many orders are PENDING (a partial index counts them)."""
    count: int = await conn.fetchval("SELECT count(*) FROM orders WHERE status = 'PENDING'")
    return count


# --- Which processes have an order stream open --------------------------------------------------------------


async def keep_stream_open(conn: asyncpg.Connection, process: uuid.UUID, seconds: float) -> None:
    """`process` has a stream open for at least `seconds` more."""
    await conn.execute(
        "INSERT INTO order_streams (process, open_until) VALUES ($1, now() + make_interval(secs => $2)) "
        "ON CONFLICT (process) DO UPDATE SET open_until = excluded.open_until",
        process,
        seconds,
    )


async def close_stream(conn: asyncpg.Connection, process: uuid.UUID) -> None:
    await conn.execute("DELETE FROM order_streams WHERE process = $1", process)


async def streams_open_elsewhere(conn: asyncpg.Connection, process: uuid.UUID) -> bool:
    """True when another process has an order stream open."""
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM order_streams WHERE open_until > now() AND process <> $1)", process
    )
    return found
