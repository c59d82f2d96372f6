"""Inbox rows and idempotency keys are forgotten once they are old enough, and not before."""

from __future__ import annotations

from collections.abc import Callable

from oms.kernel.db import create_pool, migrate
from oms.kernel.housekeeping import sweep
from tests.conftest import execute


async def test_sweep_forgets_only_expired_inbox_rows_and_idempotency_keys(
    make_database: Callable[[str], str],
) -> None:
    url = make_database("order")
    migrate("order", url)
    execute(
        url,
        """
        INSERT INTO inbox (event_id, processed_at) VALUES
            (gen_random_uuid(), now() - interval '30 days'), (gen_random_uuid(), now() - interval '1 hour');
        INSERT INTO idempotency_keys (principal, key, request_hash, created_at) VALUES
            ('a', 'old', 'h', now() - interval '2 days'), ('a', 'new', 'h', now());
        """,
    )
    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        assert await sweep(pool) == (1, 1)
        assert await sweep(pool) == (0, 0)
    finally:
        await pool.close()
    assert execute(url, "SELECT count(*) FROM inbox") == [(1,)]
    assert execute(url, "SELECT key FROM idempotency_keys") == [("new",)]
