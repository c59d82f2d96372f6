"""The auth service (port 668): composition root."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import asyncpg
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from oms.auth import credentials, store, trail
from oms.auth.api import RegisterRequest, create_user, router
from oms.auth.keys import SigningKey
from oms.auth.passwords import Passwords
from oms.auth.throttle import Policies
from oms.kernel.db import create_pool, migrate
from oms.kernel.housekeeping import Sweep, keep_tidy
from oms.kernel.http import HealthCheck, create_service_app
from oms.kernel.revocation import Revocations, following
from oms.kernel.secret_file import read_or_create
from oms.kernel.settings import Settings
from oms.kernel.tokens import Role, StaticKeys, TokenVerifier

log = logging.getLogger(__name__)


async def ensure_admin(pool: asyncpg.Pool, passwords: Passwords, username: str, password: str) -> bool:
    """Create the configured first admin unless that username exists already. True if created."""
    async with pool.acquire() as conn:
        existing = await store.user_named(conn, username)
    if existing is not None:
        if existing.role is not Role.ADMIN:
            log.warning("configured admin %r exists as a %s; left as it is", username, existing.role)
        return False
    await create_user(pool, passwords, RegisterRequest(username=username, password=password, role=Role.ADMIN))
    log.info("created the first admin %r", username)
    return True


def _forget_expired(settings: Settings) -> Sweep:
    """Forget revocations no living token needs and throttle counts that lock nothing any more."""
    window = timedelta(seconds=max(settings.login_failure_window_seconds, settings.register_window_seconds))

    async def sweep(pool: asyncpg.Pool) -> str | None:
        async with pool.acquire() as conn:
            revocations, attempts = await store.forget_expired(conn, window)
        return f"{revocations} revocations and {attempts} attempt counts" if revocations or attempts else None

    return sweep


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.database_url("auth")
        await run_in_threadpool(migrate, "auth", url)
        signing_key = SigningKey.load_or_create(settings.key_file)
        app.state.settings = settings
        app.state.signing_key = signing_key
        revocations = Revocations(settings.revocation_max_staleness_seconds)
        app.state.token_verifier = TokenVerifier(
            StaticKeys(signing_key.jwks), settings.token_issuer, settings.token_audience, revocations
        )
        app.state.passwords = Passwords()
        app.state.throttle = Policies.of(settings)
        app.state.client_address_key = read_or_create(settings.client_address_key)
        app.state.service_key = read_or_create(settings.service_key)
        app.state.pool = await create_pool(url)
        app.state.revocations_fetch = credentials.database_feed(app.state.pool)
        stop = asyncio.Event()
        tidy = asyncio.create_task(keep_tidy(app.state.pool, stop, sweeper=_forget_expired(settings)))
        try:
            if settings.admin_username and settings.admin_password:
                await ensure_admin(
                    app.state.pool,
                    app.state.passwords,
                    settings.admin_username,
                    settings.admin_password.get_secret_value(),
                )
            async with following(revocations, app.state.revocations_fetch, settings.revocation_poll_seconds):
                yield
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await tidy
            await app.state.pool.close()

    def health_checks(app: FastAPI) -> dict[str, HealthCheck]:
        async def database() -> None:
            await app.state.pool.fetchval("SELECT 1")

        return {"database": database}

    return create_service_app(
        title="OMS auth",
        description="Users, passwords and tokens. Tokens are EdDSA-signed; verify them with the JWKS.",
        lifespan=lifespan,
        routers=[router, credentials.router, trail.router],
        health_checks=health_checks,
        metrics_clients=settings.metrics_clients,
        ready_first=settings.port_sharing,
    )
