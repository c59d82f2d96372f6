"""Group commit (oms.kernel.group_commit) against real PostgreSQL: requests that wait together share a
transaction, each gets its own result, and a bad one fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

import asyncpg
import pytest

from oms.kernel.group_commit import GroupCommit
from oms.kernel.sql import Write
from oms.kernel.unit_of_work import Stage, UnitOfWork, UnitOfWorkFactory, postgres_unit_of_work


class Items:
    def __init__(self, conn: asyncpg.Connection, stage: Stage) -> None:
        self._stage = stage

    def add(self, items: Sequence[int]) -> None:
        self._stage(
            Write("INSERT INTO items (n, tx) SELECT unnest($1::int[]), pg_current_xact_id()", (list(items),))
        )


@pytest.fixture
async def pool(make_database: Callable[[str], str]) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(make_database("group"), min_size=1, max_size=4)
    assert created is not None
    await created.execute("CREATE TABLE items (n integer PRIMARY KEY CHECK (n >= 0), tx xid8 NOT NULL)")
    yield created
    await created.close()


@pytest.fixture
def units(pool: asyncpg.Pool) -> UnitOfWorkFactory[Items]:
    return postgres_unit_of_work(pool, Items)


async def insert(tx: UnitOfWork[Items], items: Sequence[int]) -> list[str]:
    tx.repository.add(items)
    return [f"item {n}" for n in items]


async def test_requests_waiting_together_share_a_transaction(
    pool: asyncpg.Pool, units: UnitOfWorkFactory[Items]
) -> None:
    writer = GroupCommit("test", units, insert)
    results = await asyncio.gather(*(writer.submit(n) for n in range(100)))
    assert results == [f"item {n}" for n in range(100)]
    transactions = await pool.fetchval("SELECT count(DISTINCT tx) FROM items")
    assert 1 <= transactions < 10  # the first request alone, then the rest in a few batches


async def test_a_bad_request_fails_alone(pool: asyncpg.Pool, units: UnitOfWorkFactory[Items]) -> None:
    writer = GroupCommit("test", units, insert)
    outcomes = await asyncio.gather(*(writer.submit(n) for n in (1, 2, -3, 4, 2)), return_exceptions=True)
    assert outcomes[:2] == ["item 1", "item 2"] and outcomes[3] == "item 4"
    assert isinstance(outcomes[2], asyncpg.CheckViolationError)
    assert isinstance(outcomes[4], asyncpg.UniqueViolationError)  # 2 twice: the second one fails
    assert sorted(await pool.fetch("SELECT n FROM items"), key=lambda r: r["n"]) == [(1,), (2,), (4,)]


async def test_a_request_alone_is_written_at_once(
    pool: asyncpg.Pool, units: UnitOfWorkFactory[Items]
) -> None:
    writer = GroupCommit("test", units, insert)
    assert await asyncio.wait_for(writer.submit(7), 2) == "item 7"
    assert await pool.fetchval("SELECT n FROM items") == 7


async def test_a_write_answering_the_wrong_number_of_results_commits_nothing(
    pool: asyncpg.Pool, units: UnitOfWorkFactory[Items]
) -> None:
    async def short(tx: UnitOfWork[Items], items: Sequence[int]) -> list[str]:
        await insert(tx, items)
        return []

    writer = GroupCommit("test", units, short)
    with pytest.raises(RuntimeError, match="0 results for 1"):
        await writer.submit(1)
    assert await pool.fetchval("SELECT count(*) FROM items") == 0
