"""The admins' pages: overview, users, a customer's account (balances, deposit, withdrawal, requests, ledger),
every order with cancel and (manual mode) match."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from oms.backoffice.charts import orders_per_minute
from oms.backoffice.customer import balance_chart_context
from oms.backoffice.forms import (
    DepositFields,
    DepositForm,
    OrderFields,
    OrderForm,
    StepFields,
    WithdrawalFields,
    WithdrawalForm,
)
from oms.backoffice.lists import ledger_context, ledger_csv, orders_context, orders_csv
from oms.backoffice.models import Cursor, Order, OrderFilter, UserRecord
from oms.backoffice.money import ConfirmToken, Whose, deposit_for, request_list, requests_of, withdraw_for
from oms.backoffice.order_actions import cancel_or_match, place_for
from oms.backoffice.services import ServiceError, Services
from oms.backoffice.sessions import Login, SignedInAdmin, require_csrf, signed_in_admin
from oms.backoffice.views import (
    FilterForm,
    ServicesDep,
    local_path,
    order_filters,
    render,
)

router = APIRouter(prefix="/admin", dependencies=[Depends(require_csrf), Depends(signed_in_admin)])
CHART_MINUTES = 30
CHART_ORDERS = 2000  # newest orders read for the chart; beyond that the busiest minutes are cut short


async def recent_orders(services: Services, login: Login, since: datetime) -> list[Order]:
    """Orders created since `since`, newest first (at most CHART_ORDERS)."""
    where = OrderFilter(start=since.date())
    found: list[Order] = []
    cursor = None
    while len(found) < CHART_ORDERS:
        page = await services.orders(login.token, where, limit=1000, cursor=Cursor(after=cursor))
        found += [o for o in page.orders if o.created_at >= since]
        if page.next_cursor is None or (page.orders and page.orders[-1].created_at < since):
            break
        cursor = page.next_cursor
    return found


@router.get("")
async def overview(request: Request, login: SignedInAdmin, services: ServicesDep) -> Response:
    """Orders per minute by status, and the PENDING orders waiting for an admin."""
    now = datetime.now(UTC)
    orders = await recent_orders(services, login, now - timedelta(minutes=CHART_MINUTES))
    waiting = await services.orders(login.token, OrderFilter(status="PENDING"), limit=100)
    requests = [
        r
        for kind in ("deposit", "withdrawal")
        for r in await services.money_requests(login.token, kind, status="REQUESTED", limit=100)
    ]
    context = {
        "chart": orders_per_minute(orders, now, CHART_MINUTES),
        "waiting": waiting.orders,
        "live_orders": waiting.orders,
        "requests_waiting": len(requests),
        "names": await services.usernames(login.token),
    }
    return render(request, "admin/overview.html", context)


async def _customer(services: Services, login: Login, customer_id: uuid.UUID) -> UserRecord:
    customer = next((u for u in await services.users(login.token) if u.id == str(customer_id)), None)
    if customer is None or not customer.is_customer:
        raise ServiceError(404, "no such customer")
    return customer


async def _customer_page(
    request: Request,
    login: Login,
    services: Services,
    customer_id: uuid.UUID,
    form: DepositForm,
    status: int = 200,
    withdrawal: WithdrawalForm | None = None,
    order_form: OrderForm | None = None,
) -> Response:
    customer = await _customer(services, login, customer_id)
    context: dict[str, Any] = {
        **await balance_chart_context(services, login, customer.id),
        **await requests_of(services, login, customer.id),
        "customer": customer,
        "form": form,
        "withdrawal_form": withdrawal or WithdrawalForm(),
        "order_form": order_form or OrderForm(),
        "names": await services.usernames(login.token),
        **await ledger_context(request, login, services, customer.id, None),
        "csv": f"/admin/customers/{customer.id}/ledger.csv",
    }
    return render(request, "admin/customer.html", context, status)


@router.get("/customers/{customer_id}")
async def customer_page(
    request: Request, customer_id: uuid.UUID, login: SignedInAdmin, services: ServicesDep
) -> Response:
    """A customer's balances, cash over time, deposits and withdrawals, ledger, and the forms to deposit and
    withdraw."""
    return await _customer_page(request, login, services, customer_id, DepositForm())


@router.post("/customers/{customer_id}/deposit")
async def deposit(
    request: Request,
    customer_id: uuid.UUID,
    login: SignedInAdmin,
    services: ServicesDep,
    form: DepositFields,
    confirm_token: ConfirmToken = "",
) -> Response:
    """Credit an asset (cash or any other) to a customer, at once, once confirmed."""
    customer = await _customer(services, login, customer_id)

    async def again(status: int) -> Response:
        return await _customer_page(request, login, services, customer_id, form, status)

    whose, back = Whose(customer.id, customer.username), f"/admin/customers/{customer.id}"
    return await deposit_for(request, login, services, whose, form, confirm_token, back=back, again=again)


@router.post("/customers/{customer_id}/withdraw")
async def withdraw(
    request: Request,
    customer_id: uuid.UUID,
    login: SignedInAdmin,
    services: ServicesDep,
    form: WithdrawalFields,
    confirm_token: ConfirmToken = "",
) -> Response:
    """Pay a customer's TRY out to an IBAN: at once, or (large) once another admin approves it."""
    customer = await _customer(services, login, customer_id)

    async def again(status: int) -> Response:
        return await _customer_page(request, login, services, customer_id, DepositForm(), status, form)

    whose, back = Whose(customer.id, customer.username), f"/admin/customers/{customer.id}"
    return await withdraw_for(request, login, services, whose, form, confirm_token, back=back, again=again)


@router.post("/customers/{customer_id}/trade")
async def place_order(
    request: Request,
    customer_id: uuid.UUID,
    login: SignedInAdmin,
    services: ServicesDep,
    form: OrderFields,
    confirm_token: ConfirmToken = "",
) -> Response:
    """Place an order for a customer (their phone call, say), once reviewed and confirmed."""
    customer = await _customer(services, login, customer_id)

    async def again(status: int) -> Response:
        page = DepositForm()
        return await _customer_page(request, login, services, customer_id, page, status, order_form=form)

    whose = Whose(customer.id, customer.username)
    back = f"/admin/customers/{customer.id}#trade"
    return await place_for(request, login, services, whose, form, confirm_token, again, back)


async def _order_filters(
    request: Request, login: Login, services: Services
) -> tuple[FilterForm, list[UserRecord]]:
    users = await services.users(login.token)
    customers = sorted((u for u in users if u.is_customer), key=lambda u: u.username)
    wanted = request.query_params.get("customer", "")
    filters = order_filters(request.query_params, wanted or None)
    if wanted and not any(c.id == wanted for c in customers):
        filters.errors.append("Customer: no such customer")
    return filters, users


@router.get("/orders")
async def orders_page(request: Request, login: SignedInAdmin, services: ServicesDep) -> Response:
    """Every order, with the customer's filter too; paging both ways; cancel, and match in manual mode."""
    filters, users = await _order_filters(request, login, services)
    context = {
        **await orders_context(request, login, services, filters),
        "admin": True,
        "customers": sorted((u for u in users if u.is_customer), key=lambda u: u.username),
        "names": {u.id: u.username for u in users},
    }
    return render(request, "orders.html", {**context, "live_orders": context["page"].orders})


@router.get("/orders.csv")
async def orders_export(request: Request, login: SignedInAdmin, services: ServicesDep) -> Response:
    """Every order the filters match, as CSV (streamed: any number of rows)."""
    filters, users = await _order_filters(request, login, services)
    if filters.errors:
        raise ServiceError(422, "; ".join(filters.errors))
    return orders_csv(login, services, filters.where, {u.id: u.username for u in users})


@router.get("/customers/{customer_id}/ledger.csv")
async def ledger_export(customer_id: uuid.UUID, login: SignedInAdmin, services: ServicesDep) -> Response:
    """A customer's every movement, with the balance after each, as CSV."""
    customer = await _customer(services, login, customer_id)
    return ledger_csv(login, services, customer.id, None, customer.username)


# After every other GET of a customer's: `{kinds}` would take their paths too.
@router.get("/customers/{customer_id}/{kinds}")
async def money_list(
    request: Request,
    customer_id: uuid.UUID,
    kinds: Literal["deposits", "withdrawals"],
    login: SignedInAdmin,
    services: ServicesDep,
) -> Response:
    """Every deposit or every withdrawal of a customer, paged; waiting ones can be decided here."""
    customer = await _customer(services, login, customer_id)
    return await request_list(request, login, services, kinds[:-1], Whose(customer.id, customer.username))


@router.post("/orders/{order_id}/match")
async def match_order(
    request: Request,
    order_id: uuid.UUID,
    login: SignedInAdmin,
    services: ServicesDep,
    step: StepFields,
) -> Response:
    """Execute a PENDING order whose funds are reserved (manual mode), once confirmed."""
    back = local_path(step.next, f"/orders/{order_id}")
    return await cancel_or_match(request, login, services, str(order_id), "match", back, step.token)
