"""The order service (port 666): composition root."""

from __future__ import annotations

from fastapi import FastAPI

from oms.kernel.service import create_event_service
from oms.kernel.settings import Settings
from oms.order.api import router
from oms.order.handlers import OrderHandlers


def create_app(settings: Settings) -> FastAPI:
    return create_event_service(
        service="order",
        description="Orders, PENDING → MATCHED | CANCELED; the only writer of order status.",
        settings=settings,
        routers=[router],
        make_handler=lambda pool, s: OrderHandlers(pool, s.execution).handle_batch,
    )
