"""Balances, reservations, tombstones and the ledger in the account database."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import asyncpg

from oms.account.domain import (
    Asset,
    Effect,
    LedgerEntry,
    Reservation,
    ReservationStatus,
    Tombstone,
)

_ASSET = "id, customer_id, asset_name, total_size, usable_size"


def _asset(row: asyncpg.Record) -> Asset:
    return Asset(row["id"], row["customer_id"], row["asset_name"], row["total_size"], row["usable_size"])


async def lock_balances(
    conn: asyncpg.Connection, customer_id: uuid.UUID, names: Iterable[str], *, create: Iterable[str] = ()
) -> dict[str, Asset]:
    """The customer's balances of `names`, row-locked in name order (so two handlers never deadlock);
    the ones in `create` are made (at zero) first if missing, so concurrent creators do not collide."""
    for name in sorted(set(create)):
        await conn.execute(
            "INSERT INTO assets (id, customer_id, asset_name, total_size, usable_size) "
            "VALUES ($1, $2, $3, 0, 0) ON CONFLICT (customer_id, asset_name) DO NOTHING",
            uuid.uuid4(),
            customer_id,
            name,
        )
    rows = await conn.fetch(
        f"SELECT {_ASSET} FROM assets WHERE customer_id = $1 AND asset_name = ANY($2::text[]) "
        "ORDER BY asset_name FOR UPDATE",
        customer_id,
        sorted(set(names)),
    )
    return {row["asset_name"]: _asset(row) for row in rows}


async def reservation_of(conn: asyncpg.Connection, order_id: uuid.UUID) -> Reservation | None:
    """The order's reservation, row-locked."""
    row = await conn.fetchrow(
        "SELECT id, order_id, customer_id, asset_name, amount, status FROM reservations "
        "WHERE order_id = $1 FOR UPDATE",
        order_id,
    )
    if row is None:
        return None
    return Reservation(
        row["id"],
        row["order_id"],
        row["customer_id"],
        row["asset_name"],
        row["amount"],
        ReservationStatus(row["status"]),
    )


async def tombstone_of(conn: asyncpg.Connection, order_id: uuid.UUID) -> Tombstone | None:
    row = await conn.fetchrow(
        "SELECT order_id, customer_id, reason FROM tombstones WHERE order_id = $1", order_id
    )
    return Tombstone(row["order_id"], row["customer_id"], row["reason"]) if row else None


async def apply(conn: asyncpg.Connection, effect: Effect) -> None:
    """Store an effect's balances, reservation, tombstone and ledger entries (not its events)."""
    for asset in effect.assets:
        await conn.execute(
            "INSERT INTO assets (id, customer_id, asset_name, total_size, usable_size) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (customer_id, asset_name) DO UPDATE "
            "SET total_size = EXCLUDED.total_size, usable_size = EXCLUDED.usable_size, updated_at = now()",
            asset.id,
            asset.customer_id,
            asset.asset_name,
            asset.total_size,
            asset.usable_size,
        )
    if effect.reservation is not None:
        r = effect.reservation
        await conn.execute(
            "INSERT INTO reservations (id, order_id, customer_id, asset_name, amount, status) "
            "VALUES ($1, $2, $3, $4, $5, $6) "
            "ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, updated_at = now()",
            r.id,
            r.order_id,
            r.customer_id,
            r.asset_name,
            r.amount,
            r.status.value,
        )
    if effect.tombstone is not None:
        t = effect.tombstone
        await conn.execute(
            "INSERT INTO tombstones (order_id, customer_id, reason) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING",
            t.order_id,
            t.customer_id,
            t.reason,
        )
    await append_entries(conn, effect.entries)


async def append_entries(conn: asyncpg.Connection, entries: Iterable[LedgerEntry]) -> None:
    await conn.executemany(
        "INSERT INTO ledger (customer_id, asset_name, kind, delta_total, delta_usable, order_id, reference) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [
            (
                e.customer_id,
                e.asset_name,
                e.kind.value,
                e.delta_total,
                e.delta_usable,
                e.order_id,
                e.reference,
            )
            for e in entries
        ],
    )


async def asset_id(conn: asyncpg.Connection, customer_id: uuid.UUID, asset_name: str) -> uuid.UUID:
    value: uuid.UUID = await conn.fetchval(
        "SELECT id FROM assets WHERE customer_id = $1 AND asset_name = $2", customer_id, asset_name
    )
    return value


async def add_withdrawal(
    conn: asyncpg.Connection, withdrawal_id: uuid.UUID, customer_id: uuid.UUID, amount: object, iban: str
) -> None:
    await conn.execute(
        "INSERT INTO withdrawals (id, customer_id, amount, iban) VALUES ($1, $2, $3, $4)",
        withdrawal_id,
        customer_id,
        amount,
        iban,
    )


async def balances(
    conn: asyncpg.Connection, customer_id: uuid.UUID | None, asset_name: str | None
) -> list[Asset]:
    rows = await conn.fetch(
        f"SELECT {_ASSET} FROM assets WHERE ($1::uuid IS NULL OR customer_id = $1) "
        "AND ($2::text IS NULL OR asset_name = $2) ORDER BY customer_id, asset_name",
        customer_id,
        asset_name,
    )
    return [_asset(r) for r in rows]


async def ledger_page(
    conn: asyncpg.Connection,
    customer_id: uuid.UUID | None,
    asset_name: str | None,
    limit: int,
    before_seq: int | None,
) -> list[asyncpg.Record]:
    """Ledger entries newest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT seq, customer_id, asset_name, kind, delta_total, delta_usable, order_id, reference, "
        "created_at FROM ledger WHERE ($1::uuid IS NULL OR customer_id = $1) "
        "AND ($2::text IS NULL OR asset_name = $2) AND ($3::bigint IS NULL OR seq < $3) "
        "ORDER BY seq DESC LIMIT $4",
        customer_id,
        asset_name,
        before_seq,
        limit,
    )
    return rows
