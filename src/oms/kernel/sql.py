"""Writing many rows, and several statements, in one round trip: the column arrays of an `unnest` insert, and
data-modifying statements run together as one."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import asyncpg


def as_columns(items: Sequence[object], *fields: str) -> list[list[Any]]:
    """The `fields` (attribute names, dotted for nested ones) of `items`, column by column: the arrays that
    `INSERT … SELECT * FROM unnest($1::…[], …)` writes many rows with in one statement."""
    return [list(map(attrgetter(field), items)) for field in fields]


@dataclass(frozen=True)
class Write:
    """One data-modifying statement and its arguments ($1… numbered from 1), to run with others."""

    sql: str
    args: tuple[Any, ...]


_PARAMETER = re.compile(r"\$(\d+)")


def _renumbered(sql: str, offset: int) -> str:
    return _PARAMETER.sub(lambda m: f"${int(m.group(1)) + offset}", sql)


async def write_together(conn: asyncpg.Connection, writes: Sequence[Write]) -> None:
    """Run `writes` as one statement — each a data-modifying CTE — so that they cost one round trip, not one
    each. They must touch different tables (they see the same snapshot, not each other's rows)."""
    if len(writes) == 1:
        await conn.execute(writes[0].sql, *writes[0].args)
        return
    parts: list[str] = []
    args: list[Any] = []
    for number, write in enumerate(writes):
        parts.append(f"w{number} AS ({_renumbered(write.sql, len(args))})")
        args += write.args
    if parts:
        await conn.execute(f"WITH {', '.join(parts)} SELECT", *args)
