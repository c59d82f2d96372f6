"""CSV exports are streamed: the memory they take does not grow with the number of rows."""

from __future__ import annotations

import asyncio
import csv
import io
import tracemalloc
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from oms.backoffice import export
from oms.backoffice.models import Cursor, LedgerEntry

AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def entries(page: int, size: int) -> list[LedgerEntry]:
    return [
        LedgerEntry(
            n, "TRY", "DEPOSIT", Decimal("10.5"), Decimal("10.5"), None, "=cmd()", AT, Decimal(n), Decimal(n)
        )
        for n in range(page * size, (page + 1) * size)
    ]


async def export_rows(pages: int, size: int = export.EXPORT_PAGE) -> tuple[int, int, str]:
    """Stream `pages` pages through the export; (bytes written, peak memory traced, the first lines)."""

    async def fetch(cursor: Cursor) -> tuple[Sequence[LedgerEntry], str | None]:
        number = int(cursor.after or 0)
        return entries(number, size), (str(number + 1) if number + 1 < pages else None)

    response = export.csv_response(
        "ledger", export.LEDGER_HEADER, export.all_pages(fetch), export.ledger_cells
    )
    written, head = 0, ""
    tracemalloc.start()
    async for chunk in response.body_iterator:
        text = chunk if isinstance(chunk, str) else bytes(chunk).decode()
        written += len(text)
        head = head or text[:400]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return written, peak, head


def test_an_export_takes_the_memory_of_one_page_whatever_its_length() -> None:
    small_written, small_peak, head = asyncio.run(export_rows(pages=5))
    large_written, large_peak, _ = asyncio.run(export_rows(pages=100))  # 100,000 rows
    assert large_written > 15 * small_written
    assert large_peak < 2 * small_peak + 256 * 1024
    rows = list(csv.DictReader(io.StringIO(head)))
    assert rows[0]["delta_total"] == "10.5" and rows[0]["reference"] == "'=cmd()"  # no formula runs
