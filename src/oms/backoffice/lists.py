"""The order and ledger lists as pages (filters, paging both ways, totals) and as CSV exports. A filter
that cannot be read shows its error and no rows: a list never falls back to rows nobody asked for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from oms.backoffice import export
from oms.backoffice.models import Cursor, LedgerEntry, LedgerPage, Order, OrderFilter, OrderPage
from oms.backoffice.services import Services, ledger_filter
from oms.backoffice.sessions import Login
from oms.backoffice.views import PAGE_SIZE, FilterForm, pager

NOTHING = OrderPage([], None)


def list_cursor(request: Request) -> Cursor:
    """Where the page starts, from the pager's links (`cursor`: older, `before`: newer)."""
    params = request.query_params
    return Cursor(after=params.get("cursor") or None, before=params.get("before") or None)


async def orders_context(
    request: Request, login: Login, services: Services, filters: FilterForm
) -> dict[str, Any]:
    """A page of orders with its pager and total; none at all when a filter has an error."""
    if filters.errors:
        page, count = NOTHING, None
    else:
        page = await services.orders(login.token, filters.where, limit=PAGE_SIZE, cursor=list_cursor(request))
        count = await services.count(login.token, "order", "/api/v1/orders/count", filters.where.params())
    return {
        "filters": filters,
        "page": page,
        "pager": pager(request, page.prev_cursor, page.next_cursor, count, PAGE_SIZE, "orders"),
        "csv": f"{request.url.path}.csv?{request.url.query}" if not filters.errors else None,
    }


async def ledger_context(
    request: Request, login: Login, services: Services, customer_id: str | None, asset: str | None
) -> dict[str, Any]:
    """A page of ledger movements (each with the running balance after it), its pager and total."""
    where = ledger_filter(customer_id, asset)
    page = await services.ledger(login.token, where, limit=PAGE_SIZE, cursor=list_cursor(request))
    count = await services.count(login.token, "account", "/api/v1/ledger/count", where)
    return {
        "page": page,
        "pager": pager(request, page.prev_cursor, page.next_cursor, count, PAGE_SIZE, "movements"),
    }


def orders_csv(
    login: Login, services: Services, where: OrderFilter, names: dict[str, str]
) -> StreamingResponse:
    """Every order the filters match, newest first, as CSV."""

    async def fetch(cursor: Cursor) -> tuple[Sequence[Order], str | None]:
        page = await services.orders(login.token, where, limit=export.EXPORT_PAGE, cursor=cursor)
        return page.orders, page.next_cursor

    pages = export.all_pages(fetch)
    return export.csv_response("orders", export.ORDER_HEADER, pages, export.order_cells(names))


def ledger_csv(
    login: Login, services: Services, customer_id: str | None, asset: str | None, name: str
) -> StreamingResponse:
    """Every movement (with the running balance after it), newest first, as CSV."""

    async def fetch(cursor: Cursor) -> tuple[Sequence[LedgerEntry], str | None]:
        where = ledger_filter(customer_id, asset)
        page: LedgerPage = await services.ledger(login.token, where, limit=export.EXPORT_PAGE, cursor=cursor)
        return page.entries, page.next_cursor

    return export.csv_response(
        f"ledger-{name}", export.LEDGER_HEADER, export.all_pages(fetch), export.ledger_cells
    )
