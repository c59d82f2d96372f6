"""Money in and out: a customer's deposits (requests an admin approves) and withdrawals (large ones held until
an admin other than the one who asked approves them), and the admins' queue of requests to decide. Each is
reviewed and confirmed before it is sent (`confirm`), and its notice names the amount, whose, and which."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from oms.backoffice.amounts import money, of_asset
from oms.backoffice.confirm import Review, review_unless_confirmed
from oms.backoffice.forms import DepositFields, DepositForm, StepFields, WithdrawalFields, WithdrawalForm
from oms.backoffice.lists import list_cursor
from oms.backoffice.models import MoneyRequest
from oms.backoffice.services import ServiceError, Services, request_filter
from oms.backoffice.sessions import Login, SignedIn, SignedInAdmin, require_csrf, signed_in_admin
from oms.backoffice.trail import done_and_recorded
from oms.backoffice.views import PAGE_SIZE, ServicesDep, done, local_path, pager, render, see_other
from oms.kernel.money import CASH

router = APIRouter(dependencies=[Depends(require_csrf)])
admin_router = APIRouter(prefix="/admin", dependencies=[Depends(require_csrf), Depends(signed_in_admin)])

RECENT = 20  # decided requests shown on the admins' page, of each kind
NEWEST = 10  # requests of each kind on a customer's money page; all of them on their own pages
WAITING = 1000  # requests waiting for a decision that the admins' page lists (and a decision looks among)
Again = Callable[
    [int], Awaitable[Response]
]  # the form's page again, with this status, its problems filled in
ConfirmToken = Annotated[str, Form(max_length=200)]


@dataclass(frozen=True)
class Whose:
    """The customer a deposit or withdrawal is for."""

    id: str
    name: str


def _short(identifier: str) -> str:
    return identifier[:8]


async def deposit_for(
    request: Request,
    login: Login,
    services: Services,
    whose: Whose,
    form: DepositForm,
    token: str,
    *,
    back: str,
    again: Again,
) -> Response:
    """Review, then (confirmed) send a deposit for `whose`: an admin's is credited at once, a customer's
    waits for an admin. Then `back`, or `again` (the form's page again) with the service's refusal."""
    checked = form.checked()
    if checked is None:
        return await again(422)
    asset, value = checked
    shown = f"{of_asset(value, asset)} {asset}"
    review = Review(
        title=f"Deposit {shown} for {whose.name}" if login.is_admin else f"Request a deposit of {shown}",
        action=request.url.path,
        fields={"asset": asset, "amount": str(value), "key": form.key},
        button="Confirm deposit" if login.is_admin else "Confirm deposit request",
        back=back,
        facts=[
            ("Customer", whose.name),
            ("Amount", shown),
            ("Credited", "at once" if login.is_admin else "once an admin approves it"),
        ],
    )
    if (page := review_unless_confirmed(request, review, token)) is not None:
        return page
    try:
        deposit_id, status = await services.deposit(login.token, whose.id, asset, value, form.key)
    except ServiceError as exc:
        if exc.status >= 500:
            raise
        form.problem = exc.message
        return await again(exc.status)
    if status == "REQUESTED":
        text = f"Deposit of {shown} for {whose.name} requested (request {_short(deposit_id)}): "
        text += "the balance changes once an admin approves it."
    else:
        text = f"Deposited {shown} for {whose.name} (deposit {_short(deposit_id)})."
    target = ("customer", whose.id, whose.name)
    return await done_and_recorded(request, services, login, "deposit", target, text, back)


async def withdraw_for(
    request: Request,
    login: Login,
    services: Services,
    whose: Whose,
    form: WithdrawalForm,
    token: str,
    **to: Any,
) -> Response:
    """Review, then (confirmed) withdraw `whose` TRY to an IBAN: paid at once, or held until an admin (not the
    one who asked) approves it. `to` as for `deposit_for`."""
    back: str = to["back"]
    again: Again = to["again"]
    checked = form.checked()
    if checked is None:
        return await again(422)
    value, iban = checked
    shown = f"{money(value)} {CASH}"
    review = Review(
        title=f"Withdraw {shown} for {whose.name}",
        action=request.url.path,
        fields={"amount": str(value), "iban": iban, "key": form.key},
        button="Confirm withdrawal",
        back=back,
        facts=[("Customer", whose.name), ("Amount", shown), ("To IBAN", iban)],
        warning="A large withdrawal is held until an admin other than the one who asked approves it.",
    )
    if (page := review_unless_confirmed(request, review, token)) is not None:
        return page
    try:
        withdrawal_id, status = await services.withdraw(login.token, whose.id, value, iban, form.key)
    except ServiceError as exc:
        if exc.status >= 500:
            raise
        form.problem = exc.message
        return await again(exc.status)
    what = f"Withdrawal of {shown} for {whose.name} to {iban} (withdrawal {_short(withdrawal_id)})"
    if status == "REQUESTED":
        text = f"{what} requested: its amount is held until an admin approves it."
    else:
        text = f"{what} paid."
    target = ("customer", whose.id, whose.name)
    return await done_and_recorded(request, services, login, "withdraw", target, text, back)


async def requests_of(services: Services, login: Login, customer_id: str | None) -> dict[str, Any]:
    """A customer's newest deposits and withdrawals, for their page (each kind has its own list page)."""
    deposits = await services.money_requests(login.token, "deposit", customer_id=customer_id, limit=NEWEST)
    withdrawals = await services.money_requests(
        login.token, "withdrawal", customer_id=customer_id, limit=NEWEST
    )
    return {"deposits": deposits, "withdrawals": withdrawals, "newest": NEWEST}


async def request_list(
    request: Request, login: Login, services: Services, kind: str, whose: Whose
) -> Response:
    """Every deposit or withdrawal (`kind`) of a customer, newest first, paged both ways with the total."""
    customer_id = whose.id if login.is_admin else None
    where = request_filter(customer_id)
    page = await services.money_request_page(
        login.token, kind, where, limit=PAGE_SIZE, cursor=list_cursor(request)
    )
    count = await services.count(login.token, "account", f"/api/v1/{kind}s/count", where)
    context = {
        "kind": kind,
        "whose": whose,
        "requests": page.requests,
        "pager": pager(request, page.prev_cursor, page.next_cursor, count, PAGE_SIZE, f"{kind}s"),
        "names": await services.usernames(login.token) if login.is_admin else {},
        "back": f"/admin/customers/{whose.id}" if login.is_admin else "/money",
    }
    return render(request, "requests.html", context)


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


@router.get("/money/{kinds}")
async def money_list(
    request: Request, kinds: Literal["deposits", "withdrawals"], login: SignedIn, services: ServicesDep
) -> Response:
    """Every deposit or every withdrawal of the customer, paged."""
    if login.is_admin:
        return see_other("/admin/money")
    return await request_list(request, login, services, kinds[:-1], Whose(login.user_id, login.username))


@router.post("/money/deposit")
async def ask_to_deposit(
    request: Request,
    login: SignedIn,
    services: ServicesDep,
    form: DepositFields,
    confirm_token: ConfirmToken = "",
) -> Response:
    """Ask to deposit TRY: pending until an admin approves it (or credited at once, as the service says)."""
    form.asset = CASH  # customers deposit cash only

    async def again(status: int) -> Response:
        return await _money_page(request, login, services, form, WithdrawalForm(), status)

    whose = Whose(login.user_id, login.username)
    return await deposit_for(request, login, services, whose, form, confirm_token, back="/money", again=again)


@router.post("/money/withdraw")
async def ask_to_withdraw(
    request: Request,
    login: SignedIn,
    services: ServicesDep,
    form: WithdrawalFields,
    confirm_token: ConfirmToken = "",
) -> Response:
    """Withdraw TRY to an IBAN: paid at once, or (large) held until an admin approves it."""

    async def again(status: int) -> Response:
        return await _money_page(request, login, services, DepositForm(), form, status)

    whose = Whose(login.user_id, login.username)
    return await withdraw_for(
        request, login, services, whose, form, confirm_token, back="/money", again=again
    )


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
        "deposits": await services.money_requests(token, "deposit", status="REQUESTED", limit=WAITING),
        "withdrawals": await services.money_requests(token, "withdrawal", status="REQUESTED", limit=WAITING),
        "decided": _recently_decided(deposits, withdrawals),
        "names": await services.usernames(token),
    }
    return render(request, "admin/money.html", context)


def _find(requests: list[MoneyRequest], request_id: str) -> MoneyRequest | None:
    return next((r for r in requests if r.id == request_id), None)


OUTCOMES = {
    ("deposit", "approve"): "credited",
    ("deposit", "reject"): "nothing credited",
    ("withdrawal", "approve"): "paid out",
    ("withdrawal", "reject"): "its held amount is usable again",
}


def _decision_review(path: str, target: str, waiting: MoneyRequest, verdict: str, name: str) -> Review:
    shown = f"{of_asset(waiting.amount, waiting.asset)} {waiting.asset}"
    facts = [
        ("Customer", name),
        ("Amount", shown),
        ("Requested", f"{waiting.requested_at:%Y-%m-%d %H:%M} UTC"),
    ]
    if waiting.iban:
        facts.append(("To IBAN", waiting.iban))
    return Review(
        title=f"{verdict.capitalize()} the {waiting.kind} of {shown} for {name}",
        action=path,
        fields={"next": target},
        button=f"Confirm: {verdict}",
        back=target,
        facts=[*facts, ("Then", OUTCOMES[(waiting.kind, verdict)])],
        danger=verdict == "reject",
    )


@admin_router.post("/requests/{kind}/{request_id}/{verdict}")
async def decide(
    request: Request,
    kind: Literal["deposit", "withdrawal"],
    request_id: uuid.UUID,
    verdict: Literal["approve", "reject"],
    login: SignedInAdmin,
    services: ServicesDep,
    step: StepFields,
) -> Response:
    """Approve or reject a deposit (credit it) or a withdrawal (pay it out; not the admin who asked), after a
    review, and go back to where the admin was, with what happened to whose money."""
    target = local_path(step.next, "/admin/money")
    waiting_list = await services.money_requests(login.token, kind, status="REQUESTED", limit=WAITING)
    waiting = _find(waiting_list, str(request_id))
    if waiting is None:
        return done(
            request, target, f"That {kind} request is no longer waiting: it was decided already.", "warn"
        )
    name = (await services.usernames(login.token)).get(waiting.customer_id, _short(waiting.customer_id))
    review = _decision_review(request.url.path, target, waiting, verdict, name)
    if (page := review_unless_confirmed(request, review, step.token)) is not None:
        return page
    what = f"the {kind} of {of_asset(waiting.amount, waiting.asset)} {waiting.asset} for {name}"
    try:
        await services.decide(login.token, kind, str(request_id), verdict)
    except ServiceError as exc:
        if exc.status == 409:
            return done(request, target, f"Not done: {what} was decided by someone else meanwhile.", "warn")
        if exc.status == 403:
            text = f"Not done: you asked for {what}; another admin must approve it (four eyes)."
            return done(request, target, text, "warn")
        raise
    past = "Approved" if verdict == "approve" else "Rejected"
    text = f"{past} {what} (request {_short(str(request_id))}): {OUTCOMES[(kind, verdict)]}."
    customer = ("customer", waiting.customer_id, name)
    return await done_and_recorded(request, services, login, f"{verdict} {kind}", customer, text, target)
