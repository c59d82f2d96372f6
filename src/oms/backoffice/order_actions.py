"""Placing, cancelling and matching orders from the back office: each reviewed and confirmed first, each
notice naming the order, its terms and whose it is; an admin's action goes into the admin trail."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.responses import Response

from oms.backoffice.amounts import money, quantity
from oms.backoffice.confirm import Review, review_unless_confirmed
from oms.backoffice.forms import OrderForm
from oms.backoffice.models import Order
from oms.backoffice.money import Whose
from oms.backoffice.services import ServiceError, Services
from oms.backoffice.sessions import Login
from oms.backoffice.trail import done_and_recorded
from oms.backoffice.views import done
from oms.kernel.money import CASH

Again = Callable[[int], Awaitable[Response]]
RESULTS = {"cancel": "Its reserved funds are released.", "match": "It executes now and settles the account."}


def terms(side: str, size: str, asset: str, price: str) -> str:
    """BUY 3 AAPL at 100.10 TRY."""
    return f"{side} {size} {asset} at {price} {CASH}"


def described(order: Order, name: str) -> str:
    """Order 1a2b3c4d (BUY 3 AAPL at 100.10 TRY, for ayse)."""
    what = terms(order.side, quantity(order.size), order.asset, money(order.price))
    return f"order {order.id[:8]} ({what}, for {name})"


async def whose_order(services: Services, login: Login, order: Order) -> str:
    if not login.is_admin:
        return login.username
    return (await services.usernames(login.token)).get(order.customer_id, order.customer_id[:8])


async def place_for(
    request: Request,
    login: Login,
    services: Services,
    whose: Whose,
    form: OrderForm,
    token: str,
    again: Again,
    back: str,
) -> Response:
    """Review, then (confirmed) place the order for `whose` and follow it on its page; a refusal shows the
    form `again` with the service's message. "Go back" on the review leads to `back`."""
    body = form.body(whose.id)
    if body is None:
        return await again(422)
    size, price = quantity(form.size_value), money(form.price_value)
    value = money(form.size_value * form.price_value)
    held = f"{value} {CASH}" if form.side == "BUY" else f"{size} {form.asset}"
    review = Review(
        title=f"{terms(form.side, size, form.asset, price)} for {whose.name}",
        action=request.url.path,
        fields={
            "asset": form.asset,
            "side": form.side,
            "size": body["size"],
            "price": body["price"],
            "key": form.key,
        },
        button=f"Confirm {form.side.lower()} order",
        back=back,
        facts=[
            ("Customer", whose.name),
            ("Side", form.side),
            ("Asset", form.asset),
            ("Size", size),
            ("Limit price", f"{price} {CASH}"),
            ("Value", f"{value} {CASH}"),
            ("Reserved until it ends", held),
        ],
    )
    if (page := review_unless_confirmed(request, review, token)) is not None:
        return page
    try:
        order_id = await services.place_order(login.token, body, form.key)
    except ServiceError as exc:
        if exc.status >= 500:
            raise
        form.problem = exc.message
        return await again(exc.status)
    text = f"Order {order_id[:8]} placed: {review.title}."
    target = ("customer", whose.id, whose.name)
    return await done_and_recorded(
        request, services, login, "place order", target, text, f"/orders/{order_id}"
    )


async def cancel_or_match(
    request: Request, login: Login, services: Services, order_id: str, verb: str, back: str, token: str
) -> Response:
    """Review, then (confirmed) cancel (`verb` "cancel") or match ("match") a PENDING order; then `back`,
    saying which order it was and what became of it."""
    order = await services.order(login.token, order_id)
    name = await whose_order(services, login, order)
    what = described(order, name)
    if not order.pending:
        return done(request, back, f"Nothing done: {what} is already {order.status}.", "warn")
    review = Review(
        title=f"{verb.capitalize()} {what}",
        action=request.url.path,
        fields={"next": back},
        button=f"Confirm: {verb} the order",
        back=back,
        facts=[("Status now", "PENDING, funds reserved" if order.funds_reserved else "PENDING")],
        warning=RESULTS[verb],
        danger=verb == "cancel",
    )
    if (page := review_unless_confirmed(request, review, token)) is not None:
        return page
    try:
        if verb == "cancel":
            await services.cancel_order(login.token, order_id)
        else:
            await services.match_order(login.token, order_id)
    except ServiceError as exc:
        if exc.status != 409:
            raise
        return done(
            request, back, _refusal(what, verb, exc, await services.order(login.token, order_id)), "warn"
        )
    past = "canceled" if verb == "cancel" else "matched"
    text = f"{what[0].upper()}{what[1:]} {past}."
    target = ("order", order.id, f"{order.id[:8]} of {name}")
    return await done_and_recorded(request, services, login, f"{verb} order", target, text, back)


def _refusal(what: str, verb: str, exc: ServiceError, now: Order) -> str:
    if now.pending and verb == "match":
        return f"Not matched: {what} cannot be matched yet ({exc.message}); try again in a moment."
    return f"Not done: {what} is already {now.status}."
