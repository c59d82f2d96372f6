"""The admins' pages: overview, users, a customer's account (balances, deposit, withdrawal, requests, ledger),
every order with cancel and (manual mode) match."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from oms.backoffice.charts import orders_per_minute
from oms.backoffice.customer import balance_chart_context
from oms.backoffice.forms import DepositForm, UserForm, WithdrawalForm, new_key
from oms.backoffice.models import Order, OrderFilter, UserRecord
from oms.backoffice.money import DEPOSIT_NOTICES, Sent, requests_of, send_form, withdraw_for
from oms.backoffice.services import ServiceError, Services
from oms.backoffice.sessions import Login, SignedInAdmin, require_csrf, signed_in_admin
from oms.backoffice.views import (
    PAGE_SIZE,
    ServicesDep,
    local_path,
    order_action,
    order_filters,
    render,
    see_other,
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
        page = await services.orders(login.token, where, limit=1000, cursor=cursor)
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
        "requests_waiting": len(requests),
        "names": await services.usernames(login.token),
    }
    return render(request, "admin/overview.html", context)


async def _users_page(
    request: Request, login: Login, services: Services, form: UserForm, status: int = 200
) -> Response:
    users = sorted(await services.users(login.token), key=lambda u: (u.role, u.username))
    return render(request, "admin/users.html", {"users": users, "form": form}, status)


@router.get("/users")
async def users_page(request: Request, login: SignedInAdmin, services: ServicesDep) -> Response:
    """Every user, and the form to create a customer or an admin."""
    return await _users_page(request, login, services, UserForm())


@router.post("/users")
async def create_user(
    request: Request,
    login: SignedInAdmin,
    services: ServicesDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "customer",
) -> Response:
    """Create a customer or an admin."""
    form = UserForm(username=username.strip(), role=role)
    if not form.check(password):
        return await _users_page(request, login, services, form, 422)
    try:
        await services.register(form.username, password, form.role, login.token)
    except ServiceError as exc:
        if exc.status >= 500:
            raise
        form.problem = exc.message
        return await _users_page(request, login, services, form, exc.status)
    services.forget_usernames()
    return see_other("/admin/users?notice=user-created")


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
) -> Response:
    customer = await _customer(services, login, customer_id)
    cursor = request.query_params.get("cursor") or None
    ledger = await services.ledger(login.token, customer_id=customer.id, limit=PAGE_SIZE, cursor=cursor)
    context: dict[str, Any] = {
        **await balance_chart_context(services, login, customer.id),
        **await requests_of(services, login, customer.id),
        "customer": customer,
        "form": form,
        "withdrawal_form": withdrawal or WithdrawalForm(),
        "names": await services.usernames(login.token),
        "page": ledger,
        "cursor": cursor or "",
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
    asset: Annotated[str, Form()] = "",
    amount: Annotated[str, Form()] = "",
    key: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Credit an asset (cash or any other) to a customer, at once."""
    form = DepositForm(asset=asset, amount=amount, key=key or new_key())
    checked = form.checked()
    sent = Sent(status=422)
    if checked is not None:
        await _customer(services, login, customer_id)
        action = partial(services.deposit, login.token, str(customer_id), *checked, key=form.key)
        sent = await send_form(form, action, DEPOSIT_NOTICES)
    if sent.notice is None:
        return await _customer_page(request, login, services, customer_id, form, sent.status)
    return see_other(f"/admin/customers/{customer_id}?notice={sent.notice}")


@router.post("/customers/{customer_id}/withdraw")
async def withdraw(
    request: Request,
    customer_id: uuid.UUID,
    login: SignedInAdmin,
    services: ServicesDep,
    amount: Annotated[str, Form()] = "",
    iban: Annotated[str, Form(max_length=64)] = "",
    key: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Pay a customer's TRY out to an IBAN: at once, or (large) once another admin approves it."""
    await _customer(services, login, customer_id)
    form = WithdrawalForm(amount=amount, iban=iban, key=key or new_key())
    sent = await withdraw_for(services, login, str(customer_id), form)
    if sent.notice is None:
        page = DepositForm()
        return await _customer_page(request, login, services, customer_id, page, sent.status, form)
    return see_other(f"/admin/customers/{customer_id}?notice={sent.notice}")


@router.get("/orders")
async def orders_page(
    request: Request, login: SignedInAdmin, services: ServicesDep, cursor: str = ""
) -> Response:
    """Every order, with the customer's filter too; cancel, and match in manual mode."""
    users = await services.users(login.token)
    customers = sorted((u for u in users if u.is_customer), key=lambda u: u.username)
    wanted = request.query_params.get("customer", "")
    customer_id = wanted if any(c.id == wanted for c in customers) else None
    filters = order_filters(request.query_params, customer_id)
    page = await services.orders(login.token, filters.where, limit=PAGE_SIZE, cursor=cursor or None)
    context = {
        "filters": filters,
        "page": page,
        "admin": True,
        "customers": customers,
        "names": {u.id: u.username for u in users},
        "cursor": cursor,
    }
    return render(request, "orders.html", context)


@router.post("/orders/{order_id}/match")
async def match_order(
    order_id: uuid.UUID, login: SignedInAdmin, services: ServicesDep, next: Annotated[str, Form()] = ""
) -> Response:
    """Execute a PENDING order whose funds are reserved, at its limit price (manual mode)."""

    def refused(exc: ServiceError) -> str:
        waiting = isinstance(exc.detail, dict) and exc.detail.get("status") == "PENDING"
        return "not-reserved" if waiting else "too-late"

    target = local_path(next, f"/orders/{order_id}")
    return await order_action(services.match_order(login.token, str(order_id)), target, "matched", refused)
