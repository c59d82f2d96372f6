"""The instruments in the market database."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Final

import asyncpg

from oms.kernel.market import Instrument, InstrumentStatus
from oms.kernel.sql import Write, columns
from oms.kernel.unit_of_work import Stage
from oms.market.domain import Listing

_COLUMNS: Final = (
    "symbol, name, tick_size, lot_size, price_band_percent, status, reference_price, daily_volatility,"
    " version"
)
_INSERT: Final = f"""
    INSERT INTO instruments ({_COLUMNS}, updated_by)
    SELECT * FROM unnest($1::text[], $2::text[], $3::numeric[], $4::numeric[], $5::numeric[], $6::text[],
                         $7::numeric[], $8::numeric[], $9::integer[], $10::text[])
    ON CONFLICT (symbol) DO NOTHING
    RETURNING symbol
"""
# Only from the version that was read: a change decided on a stale read fails its unit (WriteConflict).
_UPDATE: Final = """
    UPDATE instruments SET name = $2, tick_size = $3, lot_size = $4, price_band_percent = $5, status = $6,
        reference_price = $7, daily_volatility = $8, version = $9, updated_by = $10, updated_at = now()
    WHERE symbol = $1 AND version = $9 - 1
    RETURNING symbol
"""
_SEEDING_LOCK: Final = 0x6F6D734D  # "omsM": replicas starting together seed once


def _listing(row: asyncpg.Record) -> Listing:
    instrument = Instrument(
        symbol=row["symbol"],
        name=row["name"],
        tick_size=row["tick_size"],
        lot_size=row["lot_size"],
        price_band_percent=row["price_band_percent"],
        status=InstrumentStatus(row["status"]),
        reference_price=row["reference_price"],
    )
    return Listing(instrument, row["daily_volatility"], row["version"])


def _row(listing: Listing, by: str | None) -> tuple[object, ...]:
    i = listing.instrument
    return (
        i.symbol,
        i.name,
        i.tick_size,
        i.lot_size,
        i.price_band_percent,
        i.status.value,
        i.reference_price,
        listing.daily_volatility,
        listing.version,
        by,
    )


async def all_listings(conn: asyncpg.Connection | asyncpg.Pool) -> list[Listing]:
    return [_listing(r) for r in await conn.fetch(f"SELECT {_COLUMNS} FROM instruments ORDER BY symbol")]


async def listing(conn: asyncpg.Connection | asyncpg.Pool, symbol: str) -> Listing | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM instruments WHERE symbol = $1", symbol)
    return _listing(row) if row else None


async def usual_volatility(conn: asyncpg.Connection | asyncpg.Pool) -> Decimal | None:
    """The median daily volatility of the instruments listed (None: none is)."""
    value: Decimal | None = await conn.fetchval(
        "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY daily_volatility) FROM instruments"
    )
    return value


async def seed(pool: asyncpg.Pool, listings: Sequence[Listing]) -> int:
    """List `listings` if no instrument is listed yet (the first start); how many were listed."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SEEDING_LOCK)
        if await conn.fetchval("SELECT EXISTS (SELECT FROM instruments)") or not listings:
            return 0
        await conn.execute(_INSERT, *columns(_row(listing, None) for listing in listings))
    return len(listings)


class Instruments:
    """The instruments of a unit of work: reads at once, writes staged (see `oms.kernel.unit_of_work`)."""

    def __init__(self, conn: asyncpg.Connection, stage: Stage) -> None:
        self._conn = conn
        self._stage = stage

    async def lock(self, symbol: str) -> Listing | None:
        """The instrument, row-locked until the unit ends (two admins changing it queue here)."""
        row = await self._conn.fetchrow(
            f"SELECT {_COLUMNS} FROM instruments WHERE symbol = $1 FOR UPDATE", symbol
        )
        return _listing(row) if row else None

    async def usual_volatility(self) -> Decimal | None:
        return await usual_volatility(self._conn)

    def save(self, listing: Listing, *, by: str, new: bool) -> None:
        """Write a new instrument, or the next version of a listed one (else the unit fails)."""
        if new:
            self._stage(Write(_INSERT, tuple(columns([_row(listing, by)])), rows=1))
        else:
            self._stage(Write(_UPDATE, _row(listing, by), rows=1))
