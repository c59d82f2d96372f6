"""`oms bench`'s list benchmark loads its million orders into the real, migrated orders table: the rows it
COPYs must satisfy today's constraints (a MATCHED order has an executed price, a CANCELED one none)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from oms.bench.listbench import bulk_load
from oms.kernel.db import migrate
from tests.conftest import execute


async def test_the_list_benchmarks_history_fits_the_orders_table(make_database: Callable[[str], str]) -> None:
    url = make_database("order")
    migrate("order", url)
    customers = [uuid.uuid4() for _ in range(3)]

    await bulk_load(url, customers, 500)

    counts = dict(execute(url, "SELECT status, count(*) FROM orders GROUP BY status"))
    assert sum(counts.values()) == 500 and set(counts) == {"MATCHED", "CANCELED"}
    assert execute(
        url, "SELECT count(*) FROM orders WHERE (status = 'MATCHED') <> (executed_price IS NOT NULL)"
    ) == [(0,)]
