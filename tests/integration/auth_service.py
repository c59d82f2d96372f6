"""The auth service in-process on a real PostgreSQL database: settings, clients from any address, tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from oms.auth.app import create_app
from oms.kernel.settings import Settings

ADMIN = {"username": "root-admin", "password": "admin-password-1"}


@asynccontextmanager
async def auth_client(settings: Settings, address: str = "127.0.0.1") -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://auth") as client:
            yield client


def make_settings(url: str, data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "auth_database_url": url,
        "admin_username": ADMIN["username"],
        "admin_password": ADMIN["password"],
        "login_address_max_failures": 10_000,
    }
    return Settings(**{**values, **overrides})  # type: ignore[arg-type]


async def token_of(client: httpx.AsyncClient, username: str, password: str) -> str:
    response = await client.post("/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
