"""The composition root shared by the event-driven services (order, account): database, token
verification, broker and the service's durable consumer, around the service's own routes and handler."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
from fastapi import APIRouter, FastAPI
from starlette.concurrency import run_in_threadpool

from oms.kernel.broker import JetStreamBroker
from oms.kernel.consumer import BatchHandler, ConsumerRunner
from oms.kernel.db import create_pool, migrate
from oms.kernel.housekeeping import keep_tidy
from oms.kernel.http import HealthCheck, create_service_app
from oms.kernel.nats_access import access_for
from oms.kernel.ops import ops_router
from oms.kernel.revocation import Revocations, following_auth
from oms.kernel.settings import Settings
from oms.kernel.tokens import verifier_for
from oms.kernel.unit_of_work import Stage, UnitOfWorkFactory, postgres_unit_of_work

R = TypeVar("R")


def database_and_broker(app: FastAPI) -> dict[str, HealthCheck]:
    """The health checks of a service with a database pool and a broker (`app.state.pool`, `.broker`)."""

    async def database() -> None:
        await app.state.pool.fetchval("SELECT 1")

    async def broker() -> None:
        if not app.state.broker.connected:
            raise ConnectionError("not connected to the broker")

    return {"database": database, "broker": broker}


def create_event_service(
    *,
    service: str,
    description: str,
    settings: Settings,
    routers: list[APIRouter],
    repository: Callable[[asyncpg.Connection, Stage], R],
    make_handler: Callable[[UnitOfWorkFactory[R], Settings], BatchHandler],
    on_start: Callable[[FastAPI], None] = lambda app: None,
    background: Callable[[FastAPI, asyncio.Event], Coroutine[Any, Any, None]] | None = None,
    health_checks: Callable[[FastAPI], Mapping[str, HealthCheck]] = lambda app: {},
) -> FastAPI:
    """A service app whose lifespan migrates its database, connects to the broker and consumes the
    events for durable consumer `service` with `make_handler(unit_of_work, settings)`; its units of work hand
    out `repository(conn, stage)` (`app.state.unit_of_work`); `on_start(app)` adds what the service's routes
    need to `app.state` once they exist; `background(app, stop)` runs beside the consumer until `stop`;
    `health_checks(app)` are what else it needs to answer, beside its database and broker."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.database_url(service)
        await run_in_threadpool(migrate, service, url)
        app.state.settings = settings
        revocations = Revocations(settings.revocation_max_staleness_seconds)
        app.state.token_verifier = verifier_for(settings, revocations)
        app.state.pool = await create_pool(url)
        app.state.unit_of_work = postgres_unit_of_work(app.state.pool, repository)
        on_start(app)
        app.state.broker = await JetStreamBroker.connect(access_for(settings, service))
        app.state.handler = make_handler(app.state.unit_of_work, settings)
        stop = asyncio.Event()
        consumer: asyncio.Task[None] | None = None
        tidy = asyncio.create_task(keep_tidy(app.state.pool, stop), name=f"{service}-housekeeping")
        extra = (
            asyncio.create_task(background(app, stop), name=f"{service}-background") if background else None
        )
        try:
            await app.state.broker.wait_for_topology(consumer=service)
            runner = ConsumerRunner(app.state.broker, service, app.state.handler)
            consumer = asyncio.create_task(runner.run(stop), name=f"{service}-consumer")
            # What start-up made lives as long as the process: out of the collector's sight, a full
            # collection no longer walks it (measured: list-orders p99 with 8 clients 64 ms -> 16 ms).
            gc.collect()
            gc.freeze()
            async with following_auth(settings, revocations):
                yield
        finally:
            stop.set()
            for task in (consumer, tidy, extra):
                if task is not None:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await app.state.broker.close()
            await app.state.pool.close()

    return create_service_app(
        title=f"OMS {service}",
        description=description,
        lifespan=lifespan,
        routers=[*routers, ops_router(service)],
        health_checks=lambda app: {**database_and_broker(app), **health_checks(app)},
        metrics_clients=settings.metrics_clients,
        ready_first=settings.port_sharing,
    )
