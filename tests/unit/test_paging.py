"""Keyset paging both ways: which rows a page holds, and whether there are older and newer ones."""

from __future__ import annotations

from oms.kernel.paging import Count, window

ROWS = list(range(100, 0, -1))  # newest first, as stored rows are listed


def test_the_first_page_has_only_older_rows_beyond_it() -> None:
    page = window(ROWS[:4], 3, newer=False, from_cursor=False)
    assert (page.rows, page.has_older, page.has_newer) == ([100, 99, 98], True, False)
    assert page.cursors(str) == {"nextCursor": "98", "prevCursor": None}


def test_an_older_page_has_newer_rows_before_it() -> None:
    page = window([97, 96, 95, 94], 3, newer=False, from_cursor=True)
    assert page.cursors(str) == {"nextCursor": "95", "prevCursor": "97"}
    last = window([2, 1], 3, newer=False, from_cursor=True)
    assert last.cursors(str) == {"nextCursor": None, "prevCursor": "2"}


def test_a_newer_page_is_fetched_oldest_first_and_shown_newest_first() -> None:
    page = window([95, 96, 97, 98], 3, newer=True, from_cursor=False)  # after `before` = 94
    assert page.rows == [97, 96, 95]
    assert page.cursors(str) == {"nextCursor": "95", "prevCursor": "97"}
    top = window([99, 100], 3, newer=True, from_cursor=False)
    assert not top.has_newer  # the API then answers the first page whole


def test_a_count_stops_at_its_bound() -> None:
    assert Count.of(42, bound=100).view() == {"count": 42, "atLeast": False}
    assert Count.of(101, bound=100).view() == {"count": 100, "atLeast": True}
