"""Money in and out: a customer's deposits (requests an admin approves) and withdrawals (large ones held until
an admin other than the one who asked approves them), and the admins' queue of requests to decide."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from oms.backoffice.forms import DepositForm, WithdrawalForm, new_key
from oms.backoffice.models import MoneyRequest
from oms.backoffice.services import ServiceError, Services
from oms.backoffice.sessions import Login, SignedIn, SignedInAdmin, require_csrf, signed_in_admin
from oms.backoffice.views import ServicesDep, local_path, render, see_other, with_notice
from oms.kernel.money import CASH

router = APIRouter(dependencies=[Depends(require_csrf)])
admin_router = APIRouter(prefix="/admin", dependencies=[Depends(require_csrf), Depends(signed_in_admin)])

DEPOSIT_NOTICES: Mapping[str, str] = {"REQUESTED": "deposit-requested", "APPROVED": "deposited"}
WITHDRAWAL_NOTICES: Mapping[str, str] = {"REQUESTED": "withdrawal-requested", "PAID": "withdrawal-paid"}
DECISION_REFUSED = {409: "decided-already", 403: "four-eyes"}
RECENT = 20  # decided requests shown on the admins' page, of each kind


@dataclass(frozen=True)
class Sent:
    """What became of a form sent to a service: the notice to show after the redirect, or the status to show
    the form again with (its problem filled in)."""

    notice: str | None = None
    status: int = 200


async def send_form(
    form: DepositForm | WithdrawalForm, action: Callable[[], Awaitable[str]], notices: Mapping[str, str]
) -> Sent:
    """Run `action` (the service call of a checked form); its answer picks the notice, a refusal becomes the
    form's problem."""
    try:
        answer = await action()
    except ServiceError as exc:
        if exc.status >= 500:
            raise
        form.problem = exc.message
        return Sent(status=exc.status)
    return Sent(notices[answer])


async def requests_of(services: Services, login: Login, customer_id: str | None) -> dict[str, Any]:
    """A customer's deposits and withdrawals, newest first, for their page."""
    deposits = await services.money_requests(login.token, "deposit", customer_id=customer_id)
    withdrawals = await services.money_requests(login.token, "withdrawal", customer_id=customer_id)
    return {"deposits": deposits, "withdrawals": withdrawals}


async def withdraw_for(services: Services, login: Login, customer_id: str, form: WithdrawalForm) -> Sent:
    """Send the withdrawal form (of `customer_id`'s TRY): paid at once, or held until an admin decides."""
    checked = form.checked()
    if checked is None:
        return Sent(status=422)
    action = partial(services.withdraw, login.token, customer_id, *checked, key=form.key)
    return await send_form(form, action, WITHDRAWAL_NOTICES)


# --- the customer's page -----------------------------------------------------------------------------------


async def _money_page(
    request: Request,
    login: Login,
    services: Services,
    deposit: DepositForm,
    withdrawal: WithdrawalForm,
    status: int = 200,
) -> Response:
    balances = await services.balances(login.token)
    context = {
        "usable_cash": next((b.usable for b in balances if b.asset == CASH), Decimal(0)),
        "deposit_form": deposit,
        "withdrawal_form": withdrawal,
        **await requests_of(services, login, None),
    }
    return render(request, "money.html", context, status)


@router.get("/money")
async def money_page(request: Request, login: SignedIn, services: ServicesDep) -> Response:
    """Deposit and withdraw TRY, and every deposit and withdrawal with its outcome."""
    if login.is_admin:
        return see_other("/admin/money")
    return await _money_page(request, login, services, DepositForm(), WithdrawalForm())


@router.post("/money/deposit")
async def ask_to_deposit(
    request: Request,
    login: SignedIn,
    services: ServicesDep,
    amount: Annotated[str, Form()] = "",
    key: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Ask to deposit TRY: pending until an admin approves it (or credited at once, as the service says)."""
    form = DepositForm(asset=CASH, amount=amount, key=key or new_key())
    checked = form.checked()
    sent = Sent(status=422)
    if checked is not None:
        action = partial(services.deposit, login.token, login.user_id, *checked, key=form.key)
        sent = await send_form(form, action, DEPOSIT_NOTICES)
    if sent.notice is None:
        return await _money_page(request, login, services, form, WithdrawalForm(), sent.status)
    return see_other(with_notice("/money", sent.notice))


@router.post("/money/withdraw")
async def ask_to_withdraw(
    request: Request,
    login: SignedIn,
    services: ServicesDep,
    amount: Annotated[str, Form()] = "",
    iban: Annotated[str, Form(max_length=64)] = "",
    key: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Withdraw TRY to an IBAN: paid at once, or (large) held until an admin approves it."""
    form = WithdrawalForm(amount=amount, iban=iban, key=key or new_key())
    sent = await withdraw_for(services, login, login.user_id, form)
    if sent.notice is None:
        return await _money_page(request, login, services, DepositForm(), form, sent.status)
    return see_other(with_notice("/money", sent.notice))


# --- the admins' queue -------------------------------------------------------------------------------------


def _recently_decided(*lists: list[MoneyRequest]) -> list[MoneyRequest]:
    decided = [r for requests in lists for r in requests if r.decided_at is not None]
    return sorted(decided, key=lambda r: r.decided_at or r.requested_at, reverse=True)[:RECENT]


@admin_router.get("/money")
async def requests_page(request: Request, login: SignedInAdmin, services: ServicesDep) -> Response:
    """Deposit and withdrawal requests waiting for a decision, and the latest decisions."""
    token = login.token
    deposits = await services.money_requests(token, "deposit", limit=RECENT + 100)
    withdrawals = await services.money_requests(token, "withdrawal", limit=RECENT + 100)
    context = {
        "deposits": await services.money_requests(token, "deposit", status="REQUESTED", limit=100),
        "withdrawals": await services.money_requests(token, "withdrawal", status="REQUESTED", limit=100),
        "decided": _recently_decided(deposits, withdrawals),
        "names": await services.usernames(token),
    }
    return render(request, "admin/money.html", context)


@admin_router.post("/requests/{kind}/{request_id}/{verdict}")
async def decide(
    kind: Literal["deposit", "withdrawal"],
    request_id: uuid.UUID,
    verdict: Literal["approve", "reject"],
    login: SignedInAdmin,
    services: ServicesDep,
    next: Annotated[str, Form()] = "",
) -> Response:
    """Approve or reject a deposit (credit it) or a withdrawal (pay it out; not the admin who asked), and go
    back to where the admin was, with what happened."""
    target = local_path(next, "/admin/money")
    try:
        await services.decide(login.token, kind, str(request_id), verdict)
    except ServiceError as exc:
        if exc.status not in DECISION_REFUSED:
            raise
        return see_other(with_notice(target, DECISION_REFUSED[exc.status]))
    return see_other(with_notice(target, "approved" if verdict == "approve" else "rejected"))
