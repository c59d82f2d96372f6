"""Balances, reservations, tombstones and the ledger in the account database."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

import asyncpg

from oms.account.domain import (
    Asset,
    BalanceKey,
    Effect,
    Reservation,
    ReservationStatus,
    Tombstone,
)
from oms.kernel.sql import Write, as_columns

_ASSET = "id, customer_id, asset_name, total_size, usable_size"


def _asset(row: asyncpg.Record) -> Asset:
    return Asset(row["id"], row["customer_id"], row["asset_name"], row["total_size"], row["usable_size"])


async def lock_orders(conn: asyncpg.Connection, order_ids: Iterable[uuid.UUID]) -> None:
    """Hold these orders until the transaction ends, across replicas too: a cancel handled while its
    order's creation is handled elsewhere would otherwise miss the reservation being made. Taken in one
    order (sorted keys), so two transactions never wait for each other in a circle."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT hashtextextended(o::text, 0) AS k "
        "FROM unnest($1::uuid[]) AS o ORDER BY 1) AS keys",
        list(order_ids),
    )


async def lock_balances(
    conn: asyncpg.Connection, keys: Iterable[BalanceKey], *, create: Iterable[BalanceKey] = ()
) -> dict[BalanceKey, Asset]:
    """The balances of these (customer, asset) pairs that exist, row-locked in key order (so two
    transactions never deadlock); those in `create` are made (at zero) first if missing, so concurrent
    creators do not collide (`unused` takes back the ones nothing was stored in)."""
    made = sorted(set(create))
    if made:
        await conn.execute(
            "INSERT INTO assets (id, customer_id, asset_name, total_size, usable_size) "
            "SELECT gen_random_uuid(), c, n, 0, 0 FROM unnest($1::uuid[], $2::text[]) AS k(c, n) "
            "ORDER BY c, n ON CONFLICT (customer_id, asset_name) DO NOTHING",
            [c for c, _ in made],
            [n for _, n in made],
        )
    wanted = sorted(set(keys) | set(made))
    rows = await conn.fetch(
        f"SELECT {_ASSET} FROM assets "
        "JOIN unnest($1::uuid[], $2::text[]) AS k(c, n) ON customer_id = k.c AND asset_name = k.n "
        "ORDER BY customer_id, asset_name FOR UPDATE OF assets",
        [c for c, _ in wanted],
        [n for _, n in wanted],
    )
    return {(row["customer_id"], row["asset_name"]): _asset(row) for row in rows}


async def drop_unused(conn: asyncpg.Connection, balances: Iterable[Asset], effects: Sequence[Effect]) -> None:
    """Delete the zero balances this transaction created that no effect stored anything in (an event
    that was refused after all): nobody else has seen them."""
    used = {asset.id for effect in effects for asset in effect.assets}
    unused = [a.id for a in balances if a.id not in used and a.total_size == 0 and a.usable_size == 0]
    if unused:
        await conn.execute(
            "DELETE FROM assets WHERE id = ANY($1::uuid[]) AND xmin = pg_current_xact_id()::xid", unused
        )


async def reservations_of(
    conn: asyncpg.Connection, order_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, Reservation]:
    """The orders' reservations, row-locked, by order id."""
    rows = await conn.fetch(
        "SELECT id, order_id, customer_id, asset_name, amount, status FROM reservations "
        "WHERE order_id = ANY($1::uuid[]) ORDER BY order_id FOR UPDATE",
        list(order_ids),
    )
    return {
        row["order_id"]: Reservation(
            row["id"],
            row["order_id"],
            row["customer_id"],
            row["asset_name"],
            row["amount"],
            ReservationStatus(row["status"]),
        )
        for row in rows
    }


async def tombstones_of(
    conn: asyncpg.Connection, order_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, Tombstone]:
    rows = await conn.fetch(
        "SELECT order_id, customer_id, reason FROM tombstones WHERE order_id = ANY($1::uuid[])",
        list(order_ids),
    )
    return {row["order_id"]: Tombstone(row["order_id"], row["customer_id"], row["reason"]) for row in rows}


def writes(effects: Sequence[Effect]) -> list[Write]:
    """The statements that store the effects' balances, reservations, tombstones and ledger entries (not
    their events), one per kind whatever their number; a later effect's state of the same row wins."""
    assets = list({(a.customer_id, a.asset_name): a for effect in effects for a in effect.assets}.values())
    reservations = list({r.id: r for effect in effects if (r := effect.reservation) is not None}.values())
    tombstones = list({t.order_id: t for effect in effects if (t := effect.tombstone) is not None}.values())
    entries = [entry for effect in effects for entry in effect.entries]
    kinds: list[tuple[str, Sequence[object], tuple[str, ...]]] = [
        (_PUT_ASSETS, assets, _ASSET_FIELDS),
        (_PUT_RESERVATIONS, reservations, _RESERVATION_FIELDS),
        (_ADD_TOMBSTONES, tombstones, ("order_id", "customer_id", "reason")),
        (_APPEND_ENTRIES, entries, _ENTRY_FIELDS),
    ]
    return [Write(sql, tuple(as_columns(rows, *fields))) for sql, rows, fields in kinds if rows]


_ASSET_FIELDS = ("id", "customer_id", "asset_name", "total_size", "usable_size")
_PUT_ASSETS = (
    "INSERT INTO assets (id, customer_id, asset_name, total_size, usable_size) "
    "SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::numeric[], $5::numeric[]) "
    "ON CONFLICT (customer_id, asset_name) DO UPDATE SET total_size = EXCLUDED.total_size, "
    "usable_size = EXCLUDED.usable_size, updated_at = now()"
)
_RESERVATION_FIELDS = ("id", "order_id", "customer_id", "asset_name", "amount", "status.value")
_PUT_RESERVATIONS = (
    "INSERT INTO reservations (id, order_id, customer_id, asset_name, amount, status) "
    "SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::numeric[], $6::text[]) "
    "ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, updated_at = now()"
)
_ADD_TOMBSTONES = (
    "INSERT INTO tombstones (order_id, customer_id, reason) "
    "SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[]) ON CONFLICT DO NOTHING"
)
_ENTRY_FIELDS = (
    "customer_id",
    "asset_name",
    "kind.value",
    "delta_total",
    "delta_usable",
    "order_id",
    "reference",
)
# In the given order (the ledger's seq follows it).
_APPEND_ENTRIES = (
    "INSERT INTO ledger (customer_id, asset_name, kind, delta_total, delta_usable, order_id, reference) "
    "SELECT c, a, k, t, u, o, r FROM unnest($1::uuid[], $2::text[], $3::text[], $4::numeric[], "
    "$5::numeric[], $6::uuid[], $7::text[]) WITH ORDINALITY AS e(c, a, k, t, u, o, r, n) ORDER BY n"
)


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
