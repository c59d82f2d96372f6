"""List-orders with a million orders stored: bulk-loaded with COPY into the order database (history only: no
events, no reservations — so only on a system the bench started itself), spread over ten thousand
customers, then a customer's first page through the API, timed."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from oms.bench.client import Client, Principal
from oms.bench.stats import latency_summary
from oms.bench.system import Target

SYMBOLS = ("AAPL", "MSFT", "GOOG", "IBM")  # of the loaded history (the list reads it, never checks it)

COLUMNS = (
    "id",
    "customer_id",
    "asset_name",
    "side",
    "size",
    "price",
    "status",
    "reason",
    "reserved",
    "created_at",
    "updated_at",
    "executed_price",
)
CHUNK = 50_000


def history(customers: list[uuid.UUID], count: int, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    """`count` terminal orders over the last year, customers chosen uniformly."""
    rng = random.Random(seed)  # noqa: S311 - sample data, not secrets
    now = datetime.now(UTC)
    sizes = [Decimal(n) for n in range(1, 11)]
    prices = [Decimal(n) / 4 for n in range(4, 4000)]
    for _ in range(count):
        created = now - timedelta(seconds=rng.uniform(60, 365 * 86400))
        matched = rng.random() < 0.8
        price = rng.choice(prices)
        yield (
            uuid.uuid4(),
            rng.choice(customers),
            rng.choice(SYMBOLS),
            rng.choice(("BUY", "SELL")),
            rng.choice(sizes),
            price,
            "MATCHED" if matched else "CANCELED",
            None if matched else "insufficient usable TRY",
            matched,
            created,
            created + timedelta(milliseconds=rng.randint(5, 50)),
            price if matched else None,  # a MATCHED order has its executed price, here its limit
        )


async def bulk_load(order_db: str, customers: list[uuid.UUID], count: int) -> float:
    """COPY `count` orders into the orders table, then ANALYZE; returns the seconds it took."""
    started = time.perf_counter()
    conn = await asyncpg.connect(order_db)
    try:
        rows = history(customers, count)
        while chunk := [row for _, row in zip(range(CHUNK), rows, strict=False)]:
            await conn.copy_records_to_table("orders", records=chunk, columns=COLUMNS)
        await conn.execute("ANALYZE orders")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def _sql_time(order_db: str, customer: uuid.UUID) -> float | None:
    """The database's own execution time of a first page (EXPLAIN ANALYZE), in ms."""
    conn = await asyncpg.connect(order_db)
    try:
        plan = await conn.fetchval(
            "EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM orders WHERE customer_id = $1 "
            "ORDER BY created_at DESC, id DESC LIMIT 101",
            customer,
        )
    finally:
        await conn.close()
    value = json.loads(plan)[0].get("Execution Time")
    return float(value) if value is not None else None


async def _timed_pages(
    client: Client, askers: list[tuple[Principal, str | None]], requests: int, concurrency: int, seed: int
) -> tuple[list[float], int]:
    rng = random.Random(seed)  # noqa: S311
    latencies: list[float] = []
    errors = 0
    remaining = requests

    async def worker() -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            who, customer = rng.choice(askers)
            params = {"customerId": customer} if customer else {}
            started = time.perf_counter()
            response = await client.list_orders(who, **params)
            elapsed = time.perf_counter() - started
            if response.status_code == 200 and response.json()["orders"]:
                latencies.append(elapsed)
            else:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


async def list_bench(
    target: Target,
    client: Client,
    admin: Principal,
    own_customers: list[Principal],
    *,
    orders: int = 1_000_000,
    customers: int = 10_000,
    requests: int = 2000,
) -> dict[str, Any]:
    """Load `orders` across `customers` (the given real customers among them) and time first pages."""
    order_db = target.database_url("order")
    assert order_db is not None
    ids = [uuid.UUID(c.id) for c in own_customers]
    ids += [uuid.uuid4() for _ in range(max(0, customers - len(ids)))]
    load_seconds = await bulk_load(order_db, ids, orders)
    conn = await asyncpg.connect(order_db)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM orders")
    finally:
        await conn.close()
    # Customers ask with their own token; an admin asks for anyone (the same indexed query).
    as_customer: list[tuple[Principal, str | None]] = [(c, None) for c in own_customers]
    as_admin: list[tuple[Principal, str | None]] = [(admin, str(i)) for i in ids[len(own_customers) :]]
    await _timed_pages(client, as_customer + as_admin, 200, 4, seed=1)  # warm up connections and caches
    results: dict[str, Any] = {
        "orders_stored": stored,
        "customers": customers,
        "bulk_load_seconds": round(load_seconds, 1),
        "page_size": 100,
        "sql_execution_ms": await _sql_time(order_db, ids[-1]),
    }
    for label, askers, concurrency in (
        ("customer token, 1 client", as_customer, 1),
        ("admin for any customer, 1 client", as_admin, 1),
        ("admin for any customer, 8 clients", as_admin, 8),
    ):
        if not askers:
            continue
        latencies, errors = await _timed_pages(client, askers, requests, concurrency, seed=2)
        results[label] = {**latency_summary(latencies), "errors": errors}
    return results
