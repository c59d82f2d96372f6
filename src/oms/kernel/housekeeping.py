"""Housekeeping a service does on its own database while it runs: forgetting inbox rows and
idempotency keys once no redelivery or retry can still need them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Final

import asyncpg

from oms.kernel.broker import EVENTS_MAX_AGE
from oms.kernel.inbox import forget_processed

log = logging.getLogger(__name__)

# An event can be delivered again as long as the stream keeps it; a day more for clock skew and replays.
INBOX_RETENTION: Final = timedelta(seconds=EVENTS_MAX_AGE) + timedelta(days=1)
IDEMPOTENCY_RETENTION: Final = timedelta(days=1)  # a client retries within minutes, not days
EVERY: Final = 3600.0


async def sweep(pool: asyncpg.Pool) -> tuple[int, int]:
    """Delete expired inbox rows and idempotency keys; returns how many of each."""
    async with pool.acquire() as conn:
        inbox = await forget_processed(conn, INBOX_RETENTION)
        status = await conn.execute(
            "DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval", IDEMPOTENCY_RETENTION
        )
    return inbox, int(status.split()[-1])


async def _sweep_service(pool: asyncpg.Pool) -> str | None:
    inbox, keys = await sweep(pool)
    return f"{inbox} inbox rows and {keys} idempotency keys" if inbox or keys else None


Sweep = Callable[[asyncpg.Pool], Awaitable[str | None]]  # what it forgot, None if nothing


async def keep_tidy(
    pool: asyncpg.Pool, stop: asyncio.Event, every: float = EVERY, sweeper: Sweep = _sweep_service
) -> None:
    """Sweep now and then every `every` seconds until `stop` is set; a failed sweep is retried next time."""
    while not stop.is_set():
        try:
            forgot = await sweeper(pool)
            if forgot:
                log.info("housekeeping: forgot %s", forgot)
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning("housekeeping failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
