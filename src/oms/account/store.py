"""Balances, reservations, tombstones and the ledger in the account database: the repository a unit of work
hands the handlers and commands (deposits and withdrawals too, through `oms.account.request_store`), and the
API's reads."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from oms.account import request_store
from oms.account.domain import (
    Asset,
    BalanceKey,
    Book,
    Effect,
    EntryKind,
    LedgerEntry,
    Reservation,
    ReservationStatus,
    Tombstone,
    balances_needed,
)
from oms.account.requests import Deposit, Withdrawal
from oms.kernel.events import Event
from oms.kernel.sql import Write, columns
from oms.kernel.unit_of_work import Stage

_ASSET = "id, customer_id, asset_name, total_size, usable_size"
_RESERVATION = "id, order_id, customer_id, asset_name, amount, status, withdrawal_id"


def _asset(row: asyncpg.Record) -> Asset:
    return Asset(row["id"], row["customer_id"], row["asset_name"], row["total_size"], row["usable_size"])


class Accounts:
    """The accounts of a unit of work: reads and locks at once, writes staged (`oms.kernel.unit_of_work`)."""

    def __init__(self, conn: asyncpg.Connection, stage: Stage) -> None:
        self._conn = conn
        self._stage = stage

    async def load_book(
        self, order_ids: Iterable[uuid.UUID], events: Iterable[Event]
    ) -> tuple[Book, list[Asset]]:
        """Lock and read what these orders' events touch: the orders, their reservations and tombstones, and
        the balances they read or pay into (the latter created at zero if missing; returned too, so that
        `store` can take back the ones nothing was stored in)."""
        ids = sorted(set(order_ids))
        await self.lock_orders(ids)
        reservations = await self._reservations(ids)
        tombstones = await self._tombstones(ids)
        needed = balances_needed(events, reservations)
        balances = await self.lock_balances(needed.held, create=needed.received)
        created = [balances[key] for key in needed.received if key in balances]
        return Book(balances, reservations, tombstones), created

    async def lock_orders(self, order_ids: Sequence[uuid.UUID]) -> None:
        """Hold these orders until the unit ends, across replicas too: a cancel handled while its order's
        creation is handled elsewhere would otherwise miss the reservation being made. Taken in one order
        (sorted keys), so two units never wait for each other in a circle."""
        await self._conn.execute(
            "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT hashtextextended(o::text, 0) AS k "
            "FROM unnest($1::uuid[]) AS o ORDER BY 1) AS keys",
            list(order_ids),
        )

    async def lock_balances(
        self, keys: Iterable[BalanceKey], *, create: Iterable[BalanceKey] = ()
    ) -> dict[BalanceKey, Asset]:
        """The balances of these (customer, asset) pairs that exist, row-locked in key order (so two units
        never deadlock); those in `create` are made (at zero) first if missing, so concurrent creators do not
        collide (`store` takes back the ones nothing was stored in)."""
        made = sorted(set(create))
        if made:
            await self._conn.execute(
                "INSERT INTO assets (id, customer_id, asset_name, total_size, usable_size) "
                "SELECT gen_random_uuid(), c, n, 0, 0 FROM unnest($1::uuid[], $2::text[]) AS k(c, n) "
                "ORDER BY c, n ON CONFLICT (customer_id, asset_name) DO NOTHING",
                *columns(made),
            )
        wanted = sorted(set(keys) | set(made))
        if not wanted:
            return {}
        rows = await self._conn.fetch(
            f"SELECT {_ASSET} FROM assets "
            "JOIN unnest($1::uuid[], $2::text[]) AS k(c, n) ON customer_id = k.c AND asset_name = k.n "
            "ORDER BY customer_id, asset_name FOR UPDATE OF assets",
            *columns(wanted),
        )
        return {(row["customer_id"], row["asset_name"]): _asset(row) for row in rows}

    def store(self, effects: Sequence[Effect], created: Iterable[Asset] = ()) -> None:
        """Stage the effects' balances, reservations, tombstones and ledger entries (not their events), one
        statement per kind whatever their number (a later effect's state of the same row wins); and delete
        the zero balances `lock_balances` created that no effect stored anything in (nobody saw them)."""
        for write in _writes(effects):
            self._stage(write)
        used = {asset.id for effect in effects for asset in effect.assets}
        unused = [a.id for a in created if a.id not in used and a.total_size == 0 and a.usable_size == 0]
        if unused:
            self._stage(Write(_DROP_UNUSED, (unused,)))

    async def lock_deposit(self, deposit_id: uuid.UUID) -> Deposit | None:
        """The deposit, row-locked until the unit ends (so two decisions on it queue up)."""
        return await request_store.locked_deposit(self._conn, deposit_id)

    def add_deposit(self, deposit: Deposit) -> None:
        self._stage(request_store.adding(deposit))

    def decide_deposit(self, deposit: Deposit) -> None:
        """Store the decision on a REQUESTED deposit (the unit fails if it was decided meanwhile)."""
        self._stage(request_store.deciding(deposit))

    async def lock_withdrawal(self, withdrawal_id: uuid.UUID) -> Withdrawal | None:
        """The withdrawal, row-locked until the unit ends."""
        return await request_store.locked_withdrawal(self._conn, withdrawal_id)

    async def lock_hold(self, withdrawal_id: uuid.UUID) -> Reservation | None:
        """The reservation that holds a withdrawal's amount, row-locked (None for one paid at once)."""
        row = await self._conn.fetchrow(
            f"SELECT {_RESERVATION} FROM reservations WHERE withdrawal_id = $1 FOR UPDATE", withdrawal_id
        )
        return _reservation(row) if row else None

    def add_withdrawal(self, withdrawal: Withdrawal) -> None:
        self._stage(request_store.adding(withdrawal))

    def decide_withdrawal(self, withdrawal: Withdrawal) -> None:
        """Store the decision on a REQUESTED withdrawal (the unit fails if it was decided meanwhile)."""
        self._stage(request_store.deciding(withdrawal))

    async def _reservations(self, order_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Reservation]:
        """The orders' reservations, row-locked, by order id."""
        rows = await self._conn.fetch(
            f"SELECT {_RESERVATION} FROM reservations WHERE order_id = ANY($1::uuid[]) "
            "ORDER BY order_id FOR UPDATE",
            list(order_ids),
        )
        return {row["order_id"]: _reservation(row) for row in rows}

    async def _tombstones(self, order_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Tombstone]:
        rows = await self._conn.fetch(
            "SELECT order_id, customer_id, reason FROM tombstones WHERE order_id = ANY($1::uuid[])",
            list(order_ids),
        )
        return {
            row["order_id"]: Tombstone(row["order_id"], row["customer_id"], row["reason"]) for row in rows
        }


def _reservation(row: asyncpg.Record) -> Reservation:
    return Reservation(
        row["id"],
        row["order_id"],
        row["customer_id"],
        row["asset_name"],
        row["amount"],
        ReservationStatus(row["status"]),
        row["withdrawal_id"],
    )


# Only rows this transaction created (xmin) and left at zero: a concurrent deposit's row is never taken.
_DROP_UNUSED = "DELETE FROM assets WHERE id = ANY($1::uuid[]) AND xmin = pg_current_xact_id()::xid"


def _writes(effects: Sequence[Effect]) -> list[Write]:
    assets = list({(a.customer_id, a.asset_name): a for effect in effects for a in effect.assets}.values())
    reservations = list({r.id: r for effect in effects if (r := effect.reservation) is not None}.values())
    tombstones = list({t.order_id: t for effect in effects if (t := effect.tombstone) is not None}.values())
    entries = [entry for effect in effects for entry in effect.entries]
    writes = []
    if assets:
        writes.append(Write(_PUT_ASSETS, tuple(columns(map(_asset_row, assets)))))
    if reservations:
        writes.append(Write(_PUT_RESERVATIONS, tuple(columns(map(_reservation_row, reservations)))))
    if tombstones:
        writes.append(Write(_ADD_TOMBSTONES, tuple(columns(map(_tombstone_row, tombstones)))))
    if entries:
        writes.append(Write(_APPEND_ENTRIES, tuple(columns(map(_entry_row, entries)))))
    return writes


def _asset_row(a: Asset) -> tuple[object, ...]:
    return (a.id, a.customer_id, a.asset_name, a.total_size, a.usable_size)


def _reservation_row(r: Reservation) -> tuple[object, ...]:
    return (r.id, r.order_id, r.customer_id, r.asset_name, r.amount, r.status.value, r.withdrawal_id)


def _tombstone_row(t: Tombstone) -> tuple[object, ...]:
    return (t.order_id, t.customer_id, t.reason)


def _entry_row(e: LedgerEntry) -> tuple[object, ...]:
    return (e.customer_id, e.asset_name, e.kind.value, e.delta_total, e.delta_usable, e.order_id, e.reference)


_PUT_ASSETS = (
    "INSERT INTO assets (id, customer_id, asset_name, total_size, usable_size) "
    "SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::numeric[], $5::numeric[]) "
    "ON CONFLICT (customer_id, asset_name) DO UPDATE SET total_size = EXCLUDED.total_size, "
    "usable_size = EXCLUDED.usable_size, updated_at = now()"
)
_PUT_RESERVATIONS = (
    "INSERT INTO reservations (id, order_id, customer_id, asset_name, amount, status, withdrawal_id) "
    "SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::numeric[], $6::text[], "
    "$7::uuid[]) ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, updated_at = now()"
)
_ADD_TOMBSTONES = (
    "INSERT INTO tombstones (order_id, customer_id, reason) "
    "SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[]) ON CONFLICT DO NOTHING"
)
# In the given order (the ledger's seq follows it).
_APPEND_ENTRIES = (
    "INSERT INTO ledger (customer_id, asset_name, kind, delta_total, delta_usable, order_id, reference) "
    "SELECT c, a, k, t, u, o, r FROM unnest($1::uuid[], $2::text[], $3::text[], $4::numeric[], "
    "$5::numeric[], $6::uuid[], $7::text[]) WITH ORDINALITY AS e(c, a, k, t, u, o, r, n) ORDER BY n"
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
    after_seq: int | None = None,
) -> list[asyncpg.Record]:
    """Ledger entries: newest first below `before_seq`, or oldest first above `after_seq` (the newer page),
    each with its balance's running figures after it (`total_after`, `usable_after`): today's balance less
    every newer movement of it. One statement, so the balances and the ledger are read in one snapshot."""
    order = "ASC" if after_seq is not None else "DESC"
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""
        WITH page AS (
            SELECT seq, customer_id, asset_name, kind, delta_total, delta_usable, order_id, reference,
                created_at
            FROM ledger
            WHERE ($1::uuid IS NULL OR customer_id = $1) AND ($2::text IS NULL OR asset_name = $2)
              AND ($3::bigint IS NULL OR seq < $3) AND ($4::bigint IS NULL OR seq > $4)
            ORDER BY seq {order} LIMIT $5
        ), newer AS (
            SELECT l.customer_id, l.asset_name, sum(l.delta_total) AS t, sum(l.delta_usable) AS u
            FROM ledger l
            JOIN (SELECT DISTINCT customer_id, asset_name FROM page) b USING (customer_id, asset_name)
            WHERE l.seq > (SELECT max(seq) FROM page)
            GROUP BY l.customer_id, l.asset_name
        )
        SELECT page.*,
            coalesce(a.total_size, 0) - coalesce(n.t, 0) - coalesce(sum(page.delta_total) OVER w, 0)
                AS total_after,
            coalesce(a.usable_size, 0) - coalesce(n.u, 0) - coalesce(sum(page.delta_usable) OVER w, 0)
                AS usable_after
        FROM page
        LEFT JOIN assets a USING (customer_id, asset_name)
        LEFT JOIN newer n USING (customer_id, asset_name)
        WINDOW w AS (
            PARTITION BY page.customer_id, page.asset_name ORDER BY page.seq DESC
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        )
        ORDER BY page.seq {order}
        """,
        customer_id,
        asset_name,
        before_seq,
        after_seq,
        limit,
    )
    return rows


async def ledger_count(
    conn: asyncpg.Connection, customer_id: uuid.UUID | None, asset_name: str | None, bound: int
) -> int:
    """How many ledger entries match, counting no further than `bound + 1`."""
    counted: int = await conn.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM ledger WHERE ($1::uuid IS NULL OR customer_id = $1) "
        "AND ($2::text IS NULL OR asset_name = $2) LIMIT $3) AS matching",
        customer_id,
        asset_name,
        bound + 1,
    )
    return counted


# --- What operators read (audit, chaos, bench) ----------------------------------------------------------


@dataclass(frozen=True)
class LedgerSum:
    """A balance's ledger, summed: what the balance must be."""

    total: Decimal
    usable: Decimal
    entries: int


async def ledger_sums(conn: asyncpg.Connection) -> dict[BalanceKey, LedgerSum]:
    """Every balance's ledger, summed."""
    rows = await conn.fetch(
        "SELECT customer_id, asset_name, sum(delta_total) AS t, sum(delta_usable) AS u, count(*) AS n "
        "FROM ledger GROUP BY customer_id, asset_name"
    )
    return {(r["customer_id"], r["asset_name"]): LedgerSum(r["t"], r["u"], r["n"]) for r in rows}


async def ledger(conn: asyncpg.Connection) -> list[LedgerEntry]:
    """Every ledger entry, in order."""
    rows = await conn.fetch(
        "SELECT kind, customer_id, asset_name, delta_total, delta_usable, order_id, reference FROM ledger "
        "ORDER BY seq"
    )
    return [
        LedgerEntry(
            EntryKind(r["kind"]),
            r["customer_id"],
            r["asset_name"],
            r["delta_total"],
            r["delta_usable"],
            r["order_id"],
            r["reference"],
        )
        for r in rows
    ]


async def held_sums(conn: asyncpg.Connection) -> dict[BalanceKey, Decimal]:
    """What HELD reservations hold, per balance."""
    rows = await conn.fetch(
        "SELECT customer_id, asset_name, sum(amount) AS amount FROM reservations "
        "WHERE status = 'HELD' GROUP BY customer_id, asset_name"
    )
    return {(r["customer_id"], r["asset_name"]): r["amount"] for r in rows}


async def order_reservations(conn: asyncpg.Connection) -> dict[uuid.UUID, Reservation]:
    """Every order's reservation, by order id."""
    rows = await conn.fetch(f"SELECT {_RESERVATION} FROM reservations WHERE order_id IS NOT NULL")
    return {r["order_id"]: _reservation(r) for r in rows}


async def withdrawal_holds(conn: asyncpg.Connection) -> dict[uuid.UUID, Reservation]:
    """Every withdrawal's hold, by withdrawal id."""
    rows = await conn.fetch(f"SELECT {_RESERVATION} FROM reservations WHERE withdrawal_id IS NOT NULL")
    return {r["withdrawal_id"]: _reservation(r) for r in rows}


async def ownerless_holds(conn: asyncpg.Connection) -> list[Reservation]:
    """HELD reservations that belong to neither an order nor a withdrawal (left by older code)."""
    rows = await conn.fetch(
        f"SELECT {_RESERVATION} FROM reservations "
        "WHERE status = 'HELD' AND order_id IS NULL AND withdrawal_id IS NULL ORDER BY created_at"
    )
    return [_reservation(r) for r in rows]


async def held_count(conn: asyncpg.Connection) -> int:
    """How many orders' reservations are HELD."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM reservations WHERE status = 'HELD' AND order_id IS NOT NULL"
    )
    return count


async def settled_at(conn: asyncpg.Connection, order_ids: Iterable[str]) -> dict[str, datetime]:
    """When each order's reservation was settled or released (those that were)."""
    rows = await conn.fetch(
        "SELECT order_id::text, updated_at FROM reservations WHERE order_id = ANY($1::uuid[]) "
        "AND status <> 'HELD'",
        list(order_ids),
    )
    return {r["order_id"]: r["updated_at"] for r in rows}
