"""Keyset paging both ways, newest first, as every list API of ours serves it: `cursor` asks for the page
older than a row, `before` for the page newer than a row; the answer names the next older page's cursor
(`nextCursor`) and the next newer one's (`prevCursor`), and a bounded count says how many match in all.

The store fetches `limit + 1` rows in the direction asked (newest first for older pages, oldest first for
newer ones); `window` turns them into the page, and tells whether more lie either side."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

Row = TypeVar("Row")

COUNT_BOUND: Final = 10_000  # a count stops here ("10,000 or more"): counting a million rows is no page's job


@dataclass(frozen=True)
class Window(Generic[Row]):
    """One page, newest first, and whether there are older and newer rows beyond it."""

    rows: list[Row]
    has_older: bool
    has_newer: bool

    def cursors(self, encode: Callable[[Row], str]) -> dict[str, str | None]:
        """`nextCursor` and `prevCursor` of the API answer."""
        return {
            "nextCursor": encode(self.rows[-1]) if self.has_older and self.rows else None,
            "prevCursor": encode(self.rows[0]) if self.has_newer and self.rows else None,
        }


def window(fetched: Sequence[Row], limit: int, *, newer: bool, from_cursor: bool) -> Window[Row]:
    """The page in `fetched` (`limit + 1` rows at most, in the fetch order), newest first.

    `newer`: the rows were fetched oldest first, after a `before` row (there are older rows: that one).
    `from_cursor`: an older page, after a `cursor` row (there are newer rows: that one)."""
    more = len(fetched) > limit
    rows = list(fetched[:limit])
    if newer:
        return Window(rows[::-1], has_older=True, has_newer=more)
    return Window(rows, has_older=more, has_newer=from_cursor)


@dataclass(frozen=True)
class Count:
    """How many rows match, exactly up to `COUNT_BOUND`; beyond it, `at_least` is true."""

    count: int
    at_least: bool

    @classmethod
    def of(cls, counted: int, bound: int = COUNT_BOUND) -> Count:
        """From `SELECT count(*) FROM (… LIMIT bound + 1)`."""
        return cls(min(counted, bound), counted > bound)

    def view(self) -> dict[str, Any]:
        return {"count": self.count, "atLeast": self.at_least}
