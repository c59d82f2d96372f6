"""The market service (port 670): composition root."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from oms.kernel.broker import JetStreamBroker
from oms.kernel.db import create_pool, migrate
from oms.kernel.http import create_service_app
from oms.kernel.market_view import follow_market
from oms.kernel.nats_access import access_for
from oms.kernel.permissions import MARKET
from oms.kernel.revocation import Revocations, following_auth
from oms.kernel.service import database_and_broker
from oms.kernel.settings import Settings
from oms.kernel.tokens import verifier_for
from oms.kernel.unit_of_work import postgres_unit_of_work
from oms.market import store
from oms.market.api import router
from oms.market.domain import Listing, listing_of
from oms.market.feed import Feed
from oms.market.reference import shipped_references
from oms.market.sources import source_for
from oms.market.store import Instruments
from oms.market.turn import FeedTurn

log = logging.getLogger(__name__)


def shipped_listings() -> list[Listing]:
    """The instruments of the shipped data set, as the first start lists them."""
    return [listing_of(reference) for reference in shipped_references()]


def create_app(settings: Settings) -> FastAPI:
    source = source_for(settings)  # a replay file that cannot be read stops the start here

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.database_url("market")
        await run_in_threadpool(migrate, "market", url)
        app.state.settings = settings
        revocations = Revocations(settings.revocation_max_staleness_seconds)
        app.state.token_verifier = verifier_for(settings, revocations)
        app.state.pool = await create_pool(url, min_size=1, max_size=10)
        app.state.unit_of_work = postgres_unit_of_work(app.state.pool, Instruments)
        if not await store.all_listings(app.state.pool):
            listed = await store.seed(app.state.pool, await run_in_threadpool(shipped_listings))
            log.info("listed %d instruments from the shipped data set", listed)
        app.state.broker = await JetStreamBroker.connect(access_for(settings, MARKET))
        listings = await store.all_listings(app.state.pool)
        app.state.feed = Feed(app.state.broker, source, listings, FeedTurn(url))
        stop = asyncio.Event()
        try:
            async with follow_market(app.state.broker.connection) as view:
                app.state.market = view
                feed = asyncio.create_task(app.state.feed.run(view, stop), name="market-feed")
                try:
                    async with following_auth(settings, revocations):
                        yield
                finally:
                    stop.set()
                    with contextlib.suppress(asyncio.CancelledError):
                        await feed
        finally:
            await app.state.broker.close()
            await app.state.pool.close()

    return create_service_app(
        title="OMS market",
        description="Instruments (the security master) and quotes: the latest, and a stream of them (SSE).",
        lifespan=lifespan,
        routers=[router],
        health_checks=lambda app: {**database_and_broker(app), "instruments": partial(_listed, app)},
        metrics_clients=settings.metrics_clients,
        ready_first=settings.port_sharing,
    )


async def _listed(app: FastAPI) -> None:
    if not app.state.feed.listed:
        raise ConnectionError("the instruments are not all on the broker yet")
