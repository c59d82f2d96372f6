"""Group commit (oms.kernel.group_commit) against real PostgreSQL: requests that wait together share a
transaction, each gets its own result, and a bad one fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import asyncpg
import pytest
from prometheus_client import REGISTRY

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


async def answered(*requests: Awaitable[str]) -> list[str | BaseException]:
    """Every request's answer or error; a failure if one waits over 10 s (its writer stopped)."""
    return await asyncio.wait_for(asyncio.gather(*requests, return_exceptions=True), 10)


async def transaction_sizes(pool: asyncpg.Pool) -> list[int]:
    """How many items each transaction wrote, in the order of their items."""
    rows = await pool.fetch("SELECT count(*) AS n FROM items GROUP BY tx ORDER BY min(n)")
    return [row["n"] for row in rows]


async def test_requests_waiting_together_share_a_transaction(
    pool: asyncpg.Pool, units: UnitOfWorkFactory[Items]
) -> None:
    writer = GroupCommit("test", units, insert)
    results = await answered(*(writer.submit(n) for n in range(100)))
    assert results == [f"item {n}" for n in range(100)]
    transactions = await pool.fetchval("SELECT count(DISTINCT tx) FROM items")
    assert 1 <= transactions < 10  # the first request alone, then the rest in a few batches


async def test_a_bad_request_fails_alone(pool: asyncpg.Pool, units: UnitOfWorkFactory[Items]) -> None:
    writer = GroupCommit("test", units, insert)
    outcomes = await answered(*(writer.submit(n) for n in (1, 2, -3, 4, 2)))
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


async def test_requests_coming_one_after_another_are_each_written(
    pool: asyncpg.Pool, units: UnitOfWorkFactory[Items]
) -> None:
    writer = GroupCommit("test", units, insert)
    for n in range(3):
        assert await asyncio.wait_for(writer.submit(n), 5) == f"item {n}"
    assert await transaction_sizes(pool) == [1, 1, 1]


async def test_a_write_answering_the_wrong_number_of_results_commits_nothing(
    pool: asyncpg.Pool, units: UnitOfWorkFactory[Items]
) -> None:
    async def short(tx: UnitOfWork[Items], items: Sequence[int]) -> list[str]:
        await insert(tx, items)
        return []

    writer = GroupCommit("test", units, short)
    with pytest.raises(RuntimeError, match="0 results for 1"):
        await asyncio.wait_for(writer.submit(1), 10)
    assert await pool.fetchval("SELECT count(*) FROM items") == 0


async def test_a_transaction_carries_at_most_max_batch_requests(
    pool: asyncpg.Pool, units: UnitOfWorkFactory[Items]
) -> None:
    writer = GroupCommit("test", units, insert, max_batch=10)
    await answered(*(writer.submit(n) for n in range(25)))
    assert await transaction_sizes(pool) == [10, 10, 5]


async def test_by_default_up_to_256_requests_share_a_transaction(
    pool: asyncpg.Pool, units: UnitOfWorkFactory[Items]
) -> None:
    writer = GroupCommit("test", units, insert)
    await answered(*(writer.submit(n) for n in range(300)))
    assert await transaction_sizes(pool) == [256, 44]


async def test_each_transaction_is_counted_with_its_number_of_requests(
    units: UnitOfWorkFactory[Items],
) -> None:
    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(f"oms_group_commit_requests_{name}", {"writer": "counted"}) or 0.0

    writer = GroupCommit("counted", units, insert, max_batch=10)
    before = (sample("count"), sample("sum"))
    await answered(*(writer.submit(n) for n in range(25)))
    assert (sample("count") - before[0], sample("sum") - before[1]) == (3, 25)


async def test_a_request_whose_caller_went_away_is_still_written_and_the_others_answered(
    pool: asyncpg.Pool, units: UnitOfWorkFactory[Items]
) -> None:
    writer = GroupCommit("test", units, insert)
    requests = [asyncio.ensure_future(writer.submit(n)) for n in range(3)]
    await asyncio.sleep(0)  # the writer has taken them
    requests[1].cancel()
    answers = await answered(*requests)
    assert answers[0] == "item 0" and answers[2] == "item 2"
    assert isinstance(answers[1], asyncio.CancelledError)
    assert [row["n"] for row in await pool.fetch("SELECT n FROM items ORDER BY n")] == [0, 1, 2]


async def test_requests_waiting_when_the_writer_is_stopped_fail_instead_of_waiting_for_ever(
    pool: asyncpg.Pool, units: UnitOfWorkFactory[Items]
) -> None:
    writing, never = asyncio.Event(), asyncio.Event()

    async def stuck(tx: UnitOfWork[Items], items: Sequence[int]) -> list[str]:
        writing.set()
        await never.wait()
        return []

    writer = GroupCommit("stopped", units, stuck)
    first = asyncio.ensure_future(writer.submit(1))
    await writing.wait()
    waiting = [asyncio.ensure_future(writer.submit(n)) for n in (2, 3)]
    (task,) = [t for t in asyncio.all_tasks() if t.get_name() == "group-commit-stopped"]
    task.cancel()  # as a shutdown does
    for request in waiting:
        with pytest.raises(RuntimeError, match=r"^stopped$"):
            await asyncio.wait_for(request, 5)
    first.cancel()
    assert await pool.fetchval("SELECT count(*) FROM items") == 0
