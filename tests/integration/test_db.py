"""The services' connection pool (oms.kernel.db) against real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import pytest

from oms.kernel.db import create_pool
from oms.kernel.sql import Write, write_together


async def test_a_connection_returned_inside_a_transaction_is_rolled_back(
    make_database: Callable[[str], str],
) -> None:
    pool = await create_pool(make_database("pool"), min_size=1, max_size=1)
    try:
        await pool.execute("CREATE TABLE t (n int)")
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO t VALUES (1)")  # and the caller never commits
        async with pool.acquire() as conn:  # the same, only connection
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM t") == 0
    finally:
        await pool.close()


async def test_writes_together_are_one_statement_with_their_own_parameters(
    make_database: Callable[[str], str],
) -> None:
    pool = await create_pool(make_database("together"), min_size=1, max_size=1)
    try:
        await pool.execute("CREATE TABLE a (n int, s text); CREATE TABLE b (x int CHECK (x > 0))")
        writes = [
            Write("INSERT INTO a SELECT * FROM unnest($1::int[], $2::text[])", ([1, 2], ["one", "two"])),
            Write("INSERT INTO b VALUES ($1), ($2)", (10, 20)),
        ]
        async with pool.acquire() as conn:
            await write_together(conn, writes)
            assert await conn.fetch("SELECT n, s FROM a ORDER BY n") == [(1, "one"), (2, "two")]
            assert await conn.fetch("SELECT x FROM b ORDER BY x") == [(10,), (20,)]
            bad = [writes[0], Write("INSERT INTO b VALUES ($1)", (-1,))]
            with pytest.raises(asyncpg.CheckViolationError):
                await write_together(conn, bad)
            assert await conn.fetchval("SELECT count(*) FROM a") == 2  # all or nothing
    finally:
        await pool.close()
