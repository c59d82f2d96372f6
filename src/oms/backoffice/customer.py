"""A customer's pages: balances, placing an order, their orders (live status), cancelling, the ledger.
Admins share the order pages; the services decide what each user may see."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from oms.backoffice.charts import balance_over_time
from oms.backoffice.forms import OrderFields, OrderForm, StepFields
from oms.backoffice.lists import ledger_context, ledger_csv, orders_context, orders_csv
from oms.backoffice.models import Balance, sorted_balances
from oms.backoffice.money import ConfirmToken, Whose
from oms.backoffice.order_actions import cancel_or_match, place_for
from oms.backoffice.services import ServiceError, Services, ledger_filter
from oms.backoffice.sessions import Login, SignedIn, require_csrf
from oms.backoffice.views import (
    ServicesDep,
    local_path,
    order_filters,
    render,
    see_other,
)
from oms.kernel.money import CASH, SYMBOL

router = APIRouter(dependencies=[Depends(require_csrf)])
CHART_ENTRIES = 500  # ledger entries the balance chart is drawn from


async def balance_chart_context(
    services: Services, login: Login, customer_id: str | None
) -> dict[str, object]:
    """Balances (cash first) and the chart of the cash balance over time, for a customer's page."""
    balances = sorted_balances(await services.balances(login.token, customer_id))
    cash = next((b for b in balances if b.asset == CASH), Balance(CASH, Decimal(0), Decimal(0)))
    entries = await services.ledger(login.token, ledger_filter(customer_id, CASH), limit=CHART_ENTRIES)
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
    form: OrderFields,
    confirm_token: ConfirmToken = "",
) -> Response:
    """Review the order, place it once confirmed, then follow it on its own page; on a problem, the form
    again with messages."""
    if login.is_admin:
        return see_other("/admin/orders")

    async def again(status: int) -> Response:
        return await _trade_page(request, login, services, form, status)

    whose = Whose(login.user_id, login.username)
    return await place_for(request, login, services, whose, form, confirm_token, again, "/trade")


@router.get("/orders")
async def orders_page(request: Request, login: SignedIn, services: ServicesDep) -> Response:
    """The customer's orders, newest first, with filters, paging both ways and the total."""
    if login.is_admin:
        return see_other(f"/admin/orders?{request.url.query}")
    filters = order_filters(request.query_params)
    context = await orders_context(request, login, services, filters)
    return render(request, "orders.html", {**context, "admin": False, "live_orders": context["page"].orders})


@router.get("/orders.csv")
async def orders_export(request: Request, login: SignedIn, services: ServicesDep) -> Response:
    """The customer's orders that the filters match, as CSV."""
    filters = order_filters(request.query_params)
    if filters.errors:
        raise ServiceError(422, "; ".join(filters.errors))
    return orders_csv(login, services, filters.where, {login.user_id: login.username})


@router.get("/orders/{order_id}")
async def order_page(
    request: Request, order_id: uuid.UUID, login: SignedIn, services: ServicesDep
) -> Response:
    """One order; its status follows PENDING → MATCHED/CANCELED on screen (from the page's live stream)."""
    order = await services.order(login.token, str(order_id))
    context = {"order": order, "live_orders": [order], "live_view": "status"}
    return render(request, "order.html", context)


@router.post("/orders/{order_id}/cancel")
async def cancel_order(
    request: Request,
    order_id: uuid.UUID,
    login: SignedIn,
    services: ServicesDep,
    step: StepFields,
) -> Response:
    """Cancel a PENDING order (customers their own, admins any), once confirmed."""
    back = local_path(step.next, f"/orders/{order_id}")
    return await cancel_or_match(request, login, services, str(order_id), "cancel", back, step.token)


def _asset(asset: str) -> str | None:
    """The ledger's asset filter: a symbol, or none (every asset)."""
    wanted = asset.strip().upper()
    if wanted and not SYMBOL.fullmatch(wanted):
        raise ServiceError(422, "Asset: a symbol such as AAPL")
    return wanted or None


@router.get("/ledger")
async def ledger_page(request: Request, login: SignedIn, services: ServicesDep, asset: str = "") -> Response:
    """Every movement of the customer's balances, newest first, with the balance after each."""
    if login.is_admin:
        return see_other("/admin/users")
    balances = sorted_balances(await services.balances(login.token))
    wanted = _asset(asset)
    context = {
        **await ledger_context(request, login, services, None, wanted),
        "assets": [b.asset for b in balances],
        "asset": wanted or "",
        "csv": f"/ledger.csv?{request.url.query}",
    }
    return render(request, "ledger.html", context)


@router.get("/ledger.csv")
async def ledger_export(login: SignedIn, services: ServicesDep, asset: str = "") -> Response:
    """Every movement of the customer's balances, with the balance after each, as CSV."""
    return ledger_csv(login, services, None, _asset(asset), login.username)
