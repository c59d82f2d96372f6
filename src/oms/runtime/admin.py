"""`oms admin create`: straight into the auth database as the auth service's role, whether or not `oms up` is
running."""

from __future__ import annotations

import asyncio

from oms.kernel.db import create_pool, migrate
from oms.kernel.errors import ApiError
from oms.kernel.settings import Settings
from oms.kernel.tokens import Role
from oms.runtime.databases import database_urls


async def _create(url: str, name: str, password: str) -> None:
    from oms.auth.api import RegisterRequest, create_user
    from oms.auth.passwords import Passwords

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
    with database_urls(settings, ("auth",)) as urls:
        migrate("auth", urls["auth"])
        asyncio.run(_create(urls["auth"], name, password))
