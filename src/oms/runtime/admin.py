"""`oms admin create`: straight into the auth database, whether or not `oms up` is running."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

from oms.kernel.db import create_pool, migrate
from oms.kernel.errors import ApiError
from oms.kernel.settings import SERVICES, Settings
from oms.kernel.tokens import Role
from oms.runtime.ports import check_bindable
from oms.runtime.postgres import EmbeddedPostgres


@contextmanager
def auth_database(settings: Settings) -> Iterator[str]:
    """The auth database's URL: configured, or the running system's, or a briefly started server's."""
    if settings.external or settings.auth_database_url:
        yield settings.database_url("auth")
        return
    data_dir = settings.data_dir.resolve()
    state_file = data_dir / "run" / "state.json"
    if state_file.exists():
        state = json.loads(state_file.read_text())
        if psutil.pid_exists(state["pid"]) and state.get("pg_port"):
            yield EmbeddedPostgres(data_dir, state["pg_port"], settings.host).url("auth")
            return
    check_bindable(settings.host, settings.pg_port, "PostgreSQL", "OMS_PG_PORT")
    server = EmbeddedPostgres(data_dir, settings.pg_port, settings.host)
    server.start()
    try:
        server.create_databases(list(SERVICES))
        yield server.url("auth")
    finally:
        server.stop()


async def _create(url: str, name: str, password: str) -> None:
    from oms.auth.api import Passwords, RegisterRequest, create_user

    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        await create_user(
            pool, Passwords(), RegisterRequest(username=name, password=password, role=Role.ADMIN)
        )
    except ApiError as exc:
        raise RuntimeError(exc.error) from None
    finally:
        await pool.close()


def create_admin(settings: Settings, name: str, password: str) -> None:
    with auth_database(settings) as url:
        migrate("auth", url)
        asyncio.run(_create(url, name, password))
