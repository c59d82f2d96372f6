"""The order service (port 666): composition root."""

from __future__ import annotations

from fastapi import FastAPI

from oms.kernel.group_commit import GroupCommit
from oms.kernel.service import create_event_service
from oms.kernel.settings import Settings
from oms.order.api import PLACEMENTS, router
from oms.order.handlers import OrderHandlers, place_orders


def _start(app: FastAPI) -> None:
    setattr(app.state, PLACEMENTS, GroupCommit("place-orders", app.state.pool, place_orders))


def create_app(settings: Settings) -> FastAPI:
    return create_event_service(
        service="order",
        description="Orders, PENDING → MATCHED | CANCELED; the only writer of order status.",
        settings=settings,
        routers=[router],
        make_handler=lambda pool, s: OrderHandlers(pool, s.execution).handle_batch,
        on_start=_start,
    )
