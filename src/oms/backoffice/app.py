"""The back office (port 669): composition root. Server-rendered pages (Jinja2 + htmx) over the three
services' APIs, called with the signed-in user's token; every asset is served from `static/`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from oms.backoffice import admin, confirm, customer, instruments, live, money, public, system, trail, users
from oms.backoffice.audits import SharedAudits
from oms.backoffice.errors import install_page_errors
from oms.backoffice.headers import SecurityHeaders
from oms.backoffice.services import Services
from oms.backoffice.sessions import SessionCodec, session_key
from oms.backoffice.tape import Tape
from oms.kernel.http import HealthCheck, create_service_app
from oms.kernel.revocation import Revocations, following_auth
from oms.kernel.secret_file import read_or_create
from oms.kernel.settings import Settings
from oms.kernel.tokens import verifier_for

STATIC = Path(__file__).parent / "static"


def create_app(settings: Settings) -> FastAPI:
    # Every page calls the services: a log line per call would drown the back office's own log.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    revocations = Revocations(settings.revocation_max_staleness_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        key = read_or_create(settings.client_address_key)
        async with (
            httpx.AsyncClient(timeout=10) as http,
            following_auth(settings, revocations),
        ):
            app.state.services = Services(http, settings, key)
            app.state.audits = SharedAudits(app.state.services.broker.connection)
            stop = asyncio.Event()
            following = asyncio.create_task(app.state.tape.run(stop), name="backoffice-market")
            try:
                yield
            finally:
                stop.set()
                await following
                await app.state.services.broker.close()

    def health_checks(app: FastAPI) -> dict[str, HealthCheck]:
        async def auth() -> None:
            response = await app.state.services.http.get(f"{settings.auth_url}/.well-known/jwks.json")
            response.raise_for_status()

        async def broker() -> None:  # market data, and the audit's shared state
            await (await app.state.services.broker.connection()).jetstream().account_info()

        return {"auth": auth, "broker": broker}

    app = create_service_app(
        title="OMS back office",
        description="The web back office of admins and customers (HTML pages; no API of its own).",
        lifespan=lifespan,
        routers=[
            public.router,
            customer.router,
            money.router,
            admin.router,
            users.router,
            trail.router,
            money.admin_router,
            instruments.router,
            live.router,
            system.router,
        ],
        health_checks=health_checks,
        metrics_clients=settings.metrics_clients,
        ready_first=settings.port_sharing,
    )
    app.state.settings = settings
    app.state.tape = Tape(settings)
    key = session_key(settings)
    app.state.sessions = SessionCodec(key)
    app.state.confirm_key = confirm.key_from(key)
    app.state.token_verifier = verifier_for(settings, revocations)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    install_page_errors(app)
    app.add_middleware(SecurityHeaders)
    return app
