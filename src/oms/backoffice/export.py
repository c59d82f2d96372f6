"""CSV exports of orders, ledger movements and the admin trail, streamed page by page from the services: a
million rows go out in the memory of one page (1,000 rows), whatever the export's length.

Figures are plain exact decimals (1000.5: no grouping, for spreadsheets and scripts); times ISO-8601 UTC.
Free text that a spreadsheet would run as a formula (= + - @ first) is written with a leading apostrophe."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypeVar

from fastapi.responses import StreamingResponse

from oms.backoffice.models import Cursor, LedgerEntry, Order, TrailEntry
from oms.kernel.money import plain

EXPORT_PAGE = 1000  # rows fetched per call to a service (its largest page)
Row = TypeVar("Row")
Fetch = Callable[[Cursor], Awaitable[tuple[Sequence[Row], str | None]]]  # a page, and the next cursor


def text(value: str | None) -> str:
    """Free text, safe from being read as a spreadsheet formula."""
    value = value or ""
    return f"'{value}" if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def figure(value: Decimal | None) -> str:
    """A number as plain text; nothing for none (a MARKET order's price)."""
    return plain(value) if value is not None else ""


def moment(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat() if value else ""


async def all_pages(fetch: Fetch[Row]) -> AsyncIterator[Sequence[Row]]:
    """Every page of a list, oldest cursor last, one at a time."""
    cursor = Cursor()
    while True:
        rows, next_cursor = await fetch(cursor)
        yield rows
        if next_cursor is None:
            return
        cursor = Cursor(after=next_cursor)


async def _lines(
    header: Sequence[str], pages: AsyncIterator[Sequence[Row]], cells: Callable[[Row], Iterable[str]]
) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    async for rows in pages:
        writer.writerows(cells(row) for row in rows)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def csv_response(
    name: str,
    header: Sequence[str],
    pages: AsyncIterator[Sequence[Row]],
    cells: Callable[[Row], Iterable[str]],
) -> StreamingResponse:
    """A CSV download named `name`-<UTC time>.csv, written as its pages arrive."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        _lines(header, pages, cells),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{name}-{stamp}.csv"',
            "Cache-Control": "no-store",
        },
    )


ORDER_HEADER = (
    "order_id", "customer_id", "customer", "side", "asset", "size", "price", "value_try", "status", "reason",
    "created_at", "updated_at",
)  # fmt: skip


def order_cells(names: dict[str, str]) -> Callable[[Order], list[str]]:
    def cells(o: Order) -> list[str]:
        return [
            o.id, o.customer_id, names.get(o.customer_id, ""), o.side, o.asset, figure(o.size),
            figure(o.shown_price), figure(o.cost), o.status, text(o.reason), moment(o.created_at),
            moment(o.updated_at),
        ]  # fmt: skip

    return cells


LEDGER_HEADER = (
    "seq", "time", "asset", "movement", "delta_total", "delta_usable", "total_after", "usable_after",
    "order_id", "reference",
)  # fmt: skip


def ledger_cells(e: LedgerEntry) -> list[str]:
    return [
        str(e.seq), moment(e.created_at), e.asset, e.kind, figure(e.delta_total), figure(e.delta_usable),
        figure(e.total_after), figure(e.usable_after), e.order_id or "", text(e.reference),
    ]  # fmt: skip


TRAIL_HEADER = ("seq", "time", "admin", "admin_id", "action", "target_kind", "target_id", "target", "detail")


def trail_cells(e: TrailEntry) -> list[str]:
    return [
        str(e.seq), moment(e.at), e.actor, e.actor_id, e.action, e.target_kind, e.target_id, text(e.target),
        text(e.detail),
    ]  # fmt: skip
