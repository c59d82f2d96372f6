"""The order service (port 666): composition root."""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI

from oms.kernel.group_commit import GroupCommit
from oms.kernel.market import MarketData
from oms.kernel.service import create_event_service
from oms.kernel.settings import Settings
from oms.order.api import router
from oms.order.handlers import handle_batch, place_orders
from oms.order.store import Orders


def create_app(settings: Settings, market: MarketData | None = None) -> FastAPI:
    """The order service; `market` is what it knows of the market (instruments and quotes). Without one,
    orders are checked only by themselves and executed at their limit price (`immediate`) or by an admin."""

    def _start(app: FastAPI) -> None:
        app.state.market = market
        app.state.placements = GroupCommit("place-orders", app.state.unit_of_work, place_orders)

    return create_event_service(
        service="order",
        description="Orders, PENDING → MATCHED | CANCELED; the only writer of order status.",
        settings=settings,
        routers=[router],
        repository=Orders,
        make_handler=lambda unit_of_work, s: partial(handle_batch, unit_of_work, s.execution),
        on_start=_start,
    )
