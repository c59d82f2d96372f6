"""Writing many rows, and several statements, in one round trip: the column arrays of an `unnest` insert, and
data-modifying statements run together as one."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg


def columns(rows: Iterable[Sequence[Any]]) -> list[list[Any]]:
    """`rows` (tuples of values, at least one) column by column: the arrays that
    `INSERT … SELECT * FROM unnest($1::…[], …)` writes many rows with in one statement."""
    transposed = [list(column) for column in zip(*rows, strict=True)]
    if not transposed:
        raise ValueError("no rows to write")
    return transposed


@dataclass(frozen=True)
class Write:
    """One data-modifying statement and its arguments ($1… numbered from 1), to run with others.

    `rows`: how many rows it must change (its SQL then ends with RETURNING); any other count is a
    `WriteConflict` and the transaction fails. None: any number."""

    sql: str
    args: tuple[Any, ...]
    rows: int | None = None


class WriteConflict(RuntimeError):
    """A write changed another number of rows than it must have: its rows were changed meanwhile."""


_PARAMETER = re.compile(r"\$(\d+)")


def _renumbered(sql: str, offset: int) -> str:
    return _PARAMETER.sub(lambda m: f"${int(m.group(1)) + offset}", sql)


async def write_together(conn: asyncpg.Connection, writes: Sequence[Write]) -> None:
    """Run `writes` as one statement — each a data-modifying CTE — so that they cost one round trip, not one
    each; then check the row counts the writes must have. They must not change the same rows (they see
    the same snapshot, not each other's changes)."""
    if not writes:
        return
    parts: list[str] = []
    counts: list[str] = []
    args: list[Any] = []
    for number, write in enumerate(writes):
        parts.append(f"w{number} AS ({_renumbered(write.sql, len(args))})")
        args += write.args
        if write.rows is not None:
            counts.append(f"(SELECT count(*) FROM w{number})")
    row = await conn.fetchrow(f"WITH {', '.join(parts)} SELECT {', '.join(counts) or 'NULL'}", *args)
    checked = [write for write in writes if write.rows is not None]
    for write, count in zip(checked, row or (), strict=False):
        if count != write.rows:
            raise WriteConflict(f"{count} rows changed where {write.rows} must have: {write.sql[:60]}…")
