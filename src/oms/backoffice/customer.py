"""A customer's pages: balances, placing an order, their orders (live status), cancelling, the ledger.
Admins share the order pages; the services decide what each user may see."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from oms.backoffice.charts import balance_over_time
from oms.backoffice.forms import OrderForm, new_key
from oms.backoffice.models import Balance, sorted_balances
from oms.backoffice.services import ServiceError, Services
from oms.backoffice.sessions import Login, SignedIn, require_csrf
from oms.backoffice.views import (
    PAGE_SIZE,
    ServicesDep,
    local_path,
    order_action,
    order_filters,
    render,
    see_other,
)
from oms.kernel.money import CASH

router = APIRouter(dependencies=[Depends(require_csrf)])
CHART_ENTRIES = 500  # ledger entries the balance chart is drawn from


async def balance_chart_context(
    services: Services, login: Login, customer_id: str | None
) -> dict[str, object]:
    """Balances (cash first) and the chart of the cash balance over time, for a customer's page."""
    balances = sorted_balances(await services.balances(login.token, customer_id))
    cash = next((b for b in balances if b.asset == CASH), Balance(CASH, Decimal(0), Decimal(0)))
    entries = await services.ledger(login.token, customer_id=customer_id, asset=CASH, limit=CHART_ENTRIES)
    return {"balances": balances, "chart": balance_over_time(entries.entries, cash, datetime.now(UTC))}


@router.get("/")
async def balances_page(request: Request, login: SignedIn, services: ServicesDep) -> Response:
    """The customer's balances: total, usable and reserved per asset, and cash over time."""
    if login.is_admin:
        return see_other("/admin")
    return render(request, "balances.html", await balance_chart_context(services, login, None))


@router.get("/balances")
async def balances_table(request: Request, login: SignedIn, services: ServicesDep) -> Response:
    """The balances table alone (the balances page refreshes it every few seconds)."""
    balances = sorted_balances(await services.balances(login.token))
    return render(request, "_balances_table.html", {"balances": balances})


async def _trade_page(
    request: Request, login: Login, services: Services, form: OrderForm, status: int = 200
) -> Response:
    balances = sorted_balances(await services.balances(login.token))
    return render(request, "trade.html", {"form": form, "balances": balances}, status)


@router.get("/trade")
async def trade_page(
    request: Request, login: SignedIn, services: ServicesDep, asset: str = "", side: str = "BUY"
) -> Response:
    """The form to place a BUY or SELL limit order."""
    if login.is_admin:
        return see_other("/admin/orders")
    return await _trade_page(request, login, services, OrderForm(asset=asset.upper(), side=side))


@router.post("/trade")
async def place_order(
    request: Request,
    login: SignedIn,
    services: ServicesDep,
    asset: Annotated[str, Form()] = "",
    side: Annotated[str, Form()] = "",
    size: Annotated[str, Form()] = "",
    price: Annotated[str, Form()] = "",
    key: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Place the order, then follow it on its own page; on a problem, the form again with messages."""
    if login.is_admin:
        return see_other("/admin/orders")
    form = OrderForm(asset=asset, side=side, size=size, price=price, key=key or new_key())
    body = form.body(login.user_id)
    if body is None:
        return await _trade_page(request, login, services, form, 422)
    try:
        order_id = await services.place_order(login.token, body, form.key)
    except ServiceError as exc:
        if exc.status >= 500:
            raise
        form.problem = exc.message
        return await _trade_page(request, login, services, form, exc.status)
    return see_other(f"/orders/{order_id}")


@router.get("/orders")
async def orders_page(request: Request, login: SignedIn, services: ServicesDep, cursor: str = "") -> Response:
    """The customer's orders, newest first, with filters and paging."""
    if login.is_admin:
        return see_other(f"/admin/orders?{request.url.query}")
    filters = order_filters(request.query_params)
    page = await services.orders(login.token, filters.where, limit=PAGE_SIZE, cursor=cursor or None)
    return render(
        request, "orders.html", {"filters": filters, "page": page, "admin": False, "cursor": cursor}
    )


@router.get("/orders/{order_id}")
async def order_page(
    request: Request, order_id: uuid.UUID, login: SignedIn, services: ServicesDep
) -> Response:
    """One order; its status follows PENDING → MATCHED/CANCELED on screen."""
    order = await services.order(login.token, str(order_id))
    return render(request, "order.html", {"order": order})


@router.get("/orders/{order_id}/status")
async def order_status(
    request: Request, order_id: uuid.UUID, login: SignedIn, services: ServicesDep
) -> Response:
    """The status block of one order (htmx polls it while the order is PENDING)."""
    order = await services.order(login.token, str(order_id))
    return render(request, "_order_status.html", {"order": order})


@router.get("/orders/{order_id}/row")
async def order_row(
    request: Request, order_id: uuid.UUID, login: SignedIn, services: ServicesDep
) -> Response:
    """One row of an order list (htmx polls it while the order is PENDING)."""
    order = await services.order(login.token, str(order_id))
    names = await services.usernames(login.token) if login.is_admin else {}
    here = local_path(request.query_params.get("here"), "/orders")
    context = {"order": order, "admin": login.is_admin, "names": names, "here": here}
    return render(request, "_order_row.html", context)


@router.post("/orders/{order_id}/cancel")
async def cancel_order(
    order_id: uuid.UUID, login: SignedIn, services: ServicesDep, next: Annotated[str, Form()] = ""
) -> Response:
    """Cancel a PENDING order (customers their own, admins any)."""
    target = local_path(next, f"/orders/{order_id}")
    action = services.cancel_order(login.token, str(order_id))
    return await order_action(action, target, "canceled", lambda _: "too-late")


@router.get("/ledger")
async def ledger_page(
    request: Request, login: SignedIn, services: ServicesDep, asset: str = "", cursor: str = ""
) -> Response:
    """Every movement of the customer's balances, newest first."""
    if login.is_admin:
        return see_other("/admin/users")
    balances = sorted_balances(await services.balances(login.token))
    wanted = asset.upper() if any(b.asset == asset.upper() for b in balances) else None
    page = await services.ledger(login.token, asset=wanted, limit=PAGE_SIZE, cursor=cursor or None)
    context = {"page": page, "assets": [b.asset for b in balances], "asset": wanted or "", "cursor": cursor}
    return render(request, "ledger.html", context)
