"""The auth service (port 668): composition root."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from oms.auth import store
from oms.auth.api import Passwords, RegisterRequest, create_user, router
from oms.auth.keys import SigningKey
from oms.kernel.db import create_pool, migrate
from oms.kernel.http import HealthCheck, create_service_app
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


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.database_url("auth")
        await run_in_threadpool(migrate, "auth", url)
        signing_key = SigningKey.load_or_create(settings.key_file)
        app.state.settings = settings
        app.state.signing_key = signing_key
        app.state.token_verifier = TokenVerifier(
            StaticKeys(signing_key.jwks), settings.token_issuer, settings.token_audience
        )
        app.state.passwords = Passwords()
        app.state.pool = await create_pool(url)
        try:
            if settings.admin_username and settings.admin_password:
                await ensure_admin(
                    app.state.pool,
                    app.state.passwords,
                    settings.admin_username,
                    settings.admin_password.get_secret_value(),
                )
            yield
        finally:
            await app.state.pool.close()

    def health_checks(app: FastAPI) -> dict[str, HealthCheck]:
        async def database() -> None:
            await app.state.pool.fetchval("SELECT 1")

        return {"database": database}

    return create_service_app(
        title="OMS auth",
        description="Users, passwords and tokens. Tokens are EdDSA-signed; verify them with the JWKS.",
        lifespan=lifespan,
        routers=[router],
        health_checks=health_checks,
        metrics_clients=settings.metrics_clients,
    )
