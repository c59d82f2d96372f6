"""The order service (port 666): composition root."""

from __future__ import annotations

import asyncio
from datetime import datetime
from functools import partial

from fastapi import FastAPI

from oms.kernel.consumer import BatchHandler
from oms.kernel.group_commit import GroupCommit
from oms.kernel.http import HealthCheck
from oms.kernel.market import MarketData
from oms.kernel.market_view import MarketView
from oms.kernel.service import create_event_service
from oms.kernel.settings import ExecutionMode, Settings
from oms.kernel.unit_of_work import UnitOfWorkFactory
from oms.order import store
from oms.order.api import router
from oms.order.domain import Order
from oms.order.execution import Clock, MarketExecution, utc_now
from oms.order.expiry import run_closes
from oms.order.handlers import handle_batch, place_orders
from oms.order.store import Orders
from oms.order.stream import OrderChanges, StreamsOpen
from oms.order.stream import router as stream_router


def create_app(settings: Settings, market: MarketData | None = None, clock: Clock = utc_now) -> FastAPI:
    """The order service; `market` is what it knows of the market (instruments and quotes): by default it
    follows the market service's stream on the broker (a MarketView), in every mode, to refuse the orders the
    market would not take; in `market` mode it also executes resting orders as quotes cross them. `clock`
    tells the time of the market's close (tests move it)."""
    market = market or MarketView()
    execution: list[MarketExecution] = []  # made once the database is there
    streams = StreamsOpen()  # order changes are notified only while some stream is open

    def start(app: FastAPI) -> None:
        app.state.market = market
        app.state.placements = GroupCommit("place-orders", app.state.unit_of_work, place_orders)
        app.state.order_changes = OrderChanges(settings.database_url("order"), app.state.pool, streams)
        app.state.execution = None
        if settings.execution is ExecutionMode.MARKET:
            load = partial(_reserved_pending, app)
            app.state.execution = MarketExecution(app.state.unit_of_work, market, load, clock=clock)
            market.listen(app.state.execution.quoted)
            execution.append(app.state.execution)

    def handler(unit_of_work: UnitOfWorkFactory[Orders], s: Settings) -> BatchHandler:
        rested = execution[0].rest if execution else None
        return partial(handle_batch, unit_of_work, s.execution, market=market, rested=rested)

    def market_loaded(app: FastAPI) -> dict[str, HealthCheck]:
        async def loaded() -> None:
            if not market.ready:
                raise ConnectionError("the market's instruments and quotes are not loaded yet")

        return {"market": loaded}

    async def background(app: FastAPI, stop: asyncio.Event) -> None:
        tasks = [app.state.order_changes.run(stop)]
        if settings.execution is not ExecutionMode.IMMEDIATE:  # orders wait: DAY ones expire at the close
            tasks.append(run_closes(app.state.unit_of_work, settings.close(), stop, clock))
        if app.state.execution is not None:
            tasks.append(app.state.execution.run(stop))
        if isinstance(market, MarketView):  # read from the broker: instruments and quotes as they change
            tasks.append(market.run(app.state.broker.connection, stop))
        await asyncio.gather(*tasks)

    return create_event_service(
        service="order",
        description="Orders, PENDING → MATCHED | CANCELED; the only writer of order status.",
        settings=settings,
        routers=[stream_router, router],  # /stream before /{order_id}
        repository=lambda conn, stage: Orders(conn, stage, streams),
        make_handler=handler,
        on_start=start,
        background=background,
        health_checks=market_loaded,
    )


async def _reserved_pending(app: FastAPI, changed_since: datetime | None) -> list[Order]:
    async with app.state.pool.acquire() as conn:
        return await store.reserved_pending(conn, changed_since)
