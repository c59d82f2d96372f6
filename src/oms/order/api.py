"""The order service's HTTP API: place, list, get, cancel and match orders."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from oms.kernel.deps import IdempotencyKey, IsoDate, Pool, own_customer, units_of_work
from oms.kernel.errors import ApiError, error_responses
from oms.kernel.group_commit import GroupCommit
from oms.kernel.http import ExactJSONResponse, ExactNumber
from oms.kernel.market import MarketData
from oms.kernel.money import OrderType, PositiveDecimal, Side, Symbol, TimeInForce
from oms.kernel.paging import COUNT_BOUND, Count, window
from oms.kernel.tokens import AdminUser, CurrentUser, Principal
from oms.kernel.unit_of_work import UnitOfWork, UnitOfWorkFactory
from oms.order import store
from oms.order.domain import (
    CANCELED_BY_ADMIN,
    CANCELED_BY_CUSTOMER,
    Listing,
    MarketUnavailable,
    NotMarketable,
    Order,
    OrderInvalid,
    OrderPlaced,
    OrderStatus,
    PlaceOrder,
    TransitionRefused,
    place_order,
)
from oms.order.handlers import cancel, change_order, match_at_market, place_orders
from oms.order.store import Orders

router = APIRouter(prefix="/api/v1/orders", tags=["orders"])


class PlaceOrderRequest(BaseModel):
    customerId: uuid.UUID
    assetName: Symbol
    orderSide: Side
    size: PositiveDecimal
    price: PositiveDecimal | None = None  # the limit; required for LIMIT, none for MARKET
    orderType: OrderType = OrderType.LIMIT
    timeInForce: TimeInForce = TimeInForce.GTC


class OrderId(BaseModel):
    id: str


class OrderView(BaseModel):
    """An order as the API shows it (the schema of `order_view`'s answers)."""

    id: uuid.UUID
    customerId: uuid.UUID
    assetName: str
    orderSide: Side
    size: ExactNumber
    price: ExactNumber | None
    orderType: OrderType
    timeInForce: TimeInForce
    executedPrice: ExactNumber | None
    status: OrderStatus
    reason: str | None
    fundsReserved: bool
    createDate: datetime
    updateDate: datetime


def order_view(order: Order) -> dict[str, Any]:
    """`order` in the shape of `OrderView`, built directly: a page of 100 is half the CPU of the model."""
    return {
        "id": str(order.id),
        "customerId": str(order.customer_id),
        "assetName": order.asset_name,
        "orderSide": order.side.value,
        "size": order.size,
        "price": order.price,
        "orderType": order.order_type.value,
        "timeInForce": order.time_in_force.value,
        "executedPrice": order.executed_price,
        "status": order.status.value,
        "reason": order.reason,
        "fundsReserved": order.reserved,
        "createDate": order.created_at.isoformat(),
        "updateDate": order.updated_at.isoformat(),
    }


class OrderList(BaseModel):
    orders: list[OrderView]
    nextCursor: str | None
    prevCursor: str | None = None


class OrderCount(BaseModel):
    count: int
    atLeast: bool


class Canceled(BaseModel):
    message: str
    status: OrderStatus


async def _placements(request: Request) -> GroupCommit[Orders, OrderPlaced, None]:
    """The group commit that writes new orders placed without an Idempotency-Key (`order.app`)."""
    placements: GroupCommit[Orders, OrderPlaced, None] = request.app.state.placements
    return placements


async def _market(request: Request) -> MarketData:
    """What the order service knows of the market (503 until it has read what the market lists)."""
    market: MarketData = request.app.state.market
    if not market.ready:
        raise ApiError(503, "the market's instruments are not loaded yet: try again in a moment")
    return market


Placements = Annotated[GroupCommit[Orders, OrderPlaced, None], Depends(_placements)]
UnitsOfWork = Annotated[UnitOfWorkFactory[Orders], Depends(units_of_work)]
Market = Annotated[MarketData, Depends(_market)]


def _listing(market: MarketData, symbol: str, request: Request) -> Listing:
    collar = request.app.state.settings.market_order_collar
    return Listing(market.instrument(symbol), market.quote(symbol), collar)


@router.post("", response_model=OrderId, responses=error_responses(409, 422))
async def create_order(
    body: PlaceOrderRequest,
    request: Request,
    user: CurrentUser,
    unit_of_work: UnitsOfWork,
    placements: Placements,
    market: Market,
    key: IdempotencyKey = None,
) -> ExactJSONResponse:
    """Place a LIMIT or MARKET order; it is PENDING until the account service reserves its funds, then
    executed as the execution mode says."""
    own_customer(user, body.customerId)
    command = PlaceOrder(
        body.customerId,
        body.assetName,
        body.orderSide,
        body.size,
        body.price,
        body.orderType,
        body.timeInForce,
    )
    placed = place_order(command, datetime.now(UTC), listing=_listing(market, body.assetName, request))
    if isinstance(placed, OrderInvalid):
        raise ApiError(422, "; ".join(placed.problems))
    if isinstance(placed, MarketUnavailable):
        raise ApiError(409, placed.message)
    if key is None:  # written together with the orders placed meanwhile
        await placements.submit(placed)
        return ExactJSONResponse({"id": str(placed.order.id)})
    asked = ("POST", "/api/v1/orders", body.model_dump(mode="json"))
    async with unit_of_work() as tx:
        answer = await tx.idempotency.once(user.user_id, key, asked, partial(_place, tx, placed))
    return ExactJSONResponse(answer)


async def _place(tx: UnitOfWork[Orders], placed: OrderPlaced) -> dict[str, Any]:
    await place_orders(tx, [placed])
    return {"id": str(placed.order.id)}


def order_filter(
    user: CurrentUser,
    customerId: uuid.UUID | None = None,
    startDate: IsoDate | None = None,
    endDate: IsoDate | None = None,
    status: OrderStatus | None = None,
    assetName: Symbol | None = None,
    orderSide: Side | None = None,
) -> store.OrderFilter:
    """The list's filters (also the count's): dates are inclusive UTC days; customers see only their own."""
    if startDate and endDate and startDate > endDate:
        raise ApiError(422, "startDate is after endDate")
    return store.OrderFilter(
        customer_id=own_customer(user, customerId),
        start=datetime.combine(startDate, time(), UTC) if startDate else None,
        end=datetime.combine(endDate + timedelta(days=1), time(), UTC)
        if endDate and endDate < date.max
        else None,
        status=status,
        asset_name=assetName,
        side=orderSide,
    )


OrderQuery = Annotated[store.OrderFilter, Depends(order_filter)]


def _position(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    try:
        return store.decode_cursor(cursor) if cursor else None
    except store.InvalidCursor:
        raise ApiError(422, "invalid cursor") from None


CursorText = Annotated[str | None, Query(max_length=200)]


@router.get("", response_model=OrderList, responses=error_responses(403))
async def list_orders(
    where: OrderQuery,
    pool: Pool,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: CursorText = None,
    before: Annotated[str | None, Query(max_length=200, description="prevCursor: the newer page")] = None,
) -> ExactJSONResponse:
    """Orders newest first; dates are inclusive UTC days. Customers see only their own. `cursor` (a
    nextCursor) pages to older orders, `before` (a prevCursor) to newer ones."""
    if cursor and before:
        raise ApiError(422, "give cursor or before, not both")
    after, newer = _position(cursor), _position(before)
    async with pool.acquire() as conn:
        fetched = await store.page(conn, where, limit + 1, after, newer)
        found = window(fetched, limit, newer=newer is not None, from_cursor=after is not None)
        if newer is not None and not found.has_newer:  # back at the top: the first page, whole
            found = window(
                await store.page(conn, where, limit + 1, None), limit, newer=False, from_cursor=False
            )
    answer = {"orders": [order_view(o) for o in found.rows], **found.cursors(store.encode_cursor)}
    return ExactJSONResponse(answer)


@router.get("/count", response_model=OrderCount, responses=error_responses(403))
async def count_orders(where: OrderQuery, pool: Pool) -> OrderCount:
    """How many orders the same filters list: exact up to 10,000, then `atLeast` (counting stops there)."""
    async with pool.acquire() as conn:
        counted = await store.count(conn, where, COUNT_BOUND)
    return OrderCount(**Count.of(counted).view())


def _visible(user: Principal, order: Order | None) -> Order:
    if order is None or not (user.is_admin or str(order.customer_id) == user.user_id):
        raise ApiError(404, "order not found")
    return order


@router.get("/{order_id}", response_model=OrderView, responses=error_responses(404))
async def get_order(order_id: uuid.UUID, user: CurrentUser, pool: Pool) -> ExactJSONResponse:
    """One order."""
    async with pool.acquire() as conn:
        order = _visible(user, await store.get(conn, order_id))
    return ExactJSONResponse(order_view(order))


def _refused(refusal: TransitionRefused) -> ApiError:
    return ApiError(409, refusal.message, {"status": refusal.current.value})


@router.delete("", response_model=Canceled, responses=error_responses(404, 409))
async def cancel_order(
    orderId: uuid.UUID, request: Request, user: CurrentUser, pool: Pool, unit_of_work: UnitsOfWork
) -> Canceled:
    """Cancel a PENDING order (409 once it is MATCHED or CANCELED)."""
    async with pool.acquire() as conn:
        _visible(user, await store.get(conn, orderId))
    reason = CANCELED_BY_ADMIN if user.is_admin else CANCELED_BY_CUSTOMER
    outcome = await change_order(unit_of_work, orderId, cancel(reason))
    if isinstance(outcome, TransitionRefused):
        raise _refused(outcome)
    if request.app.state.execution is not None:  # off the book here; other replicas find it canceled
        request.app.state.execution.forget([orderId])
    return Canceled(message="order canceled", status=OrderStatus.CANCELED)


@router.post("/{order_id}/match", response_model=OrderView, responses=error_responses(404, 409))
async def match_order(
    order_id: uuid.UUID, _: AdminUser, unit_of_work: UnitsOfWork, market: Market
) -> ExactJSONResponse:
    """Execute a PENDING order whose funds are reserved, at the market's price if the quote crosses it (409
    with the quote otherwise; admins)."""
    outcome = await change_order(unit_of_work, order_id, match_at_market(market))
    if outcome is None:
        raise ApiError(404, "order not found")
    if isinstance(outcome, TransitionRefused):
        raise _refused(outcome)
    if isinstance(outcome, NotMarketable):
        quote = outcome.quote.model_dump(mode="json") if outcome.quote else None
        raise ApiError(409, outcome.message, {"status": OrderStatus.PENDING.value, "quote": quote})
    return ExactJSONResponse(order_view(outcome))
