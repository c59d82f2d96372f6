"""Watching the system without disturbing it: order outcomes and relay lag read from the service databases
in bulk (a partial index counts the PENDING orders; outcomes are fetched once, at the end), or — when only
the URLs are known — through the list API, customer by customer."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from oms.account import store as account_store
from oms.bench.client import Client, Principal
from oms.bench.http import TransportError
from oms.bench.system import Target
from oms.kernel.outbox import relay_position
from oms.kernel.topology import RELAYED, slot_name
from oms.order import store as order_store


@dataclass(frozen=True)
class Outcome:
    """An order as it ended: status and the database's own create and last-change times."""

    id: str
    status: str
    created: datetime
    updated: datetime
    executed_price: Decimal | None = None
    reserved: bool = True

    @property
    def latency(self) -> float:
        return (self.updated - self.created).total_seconds()


class Observer:
    """Reads outcomes and relay lag from the order and account databases."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.pools: dict[str, asyncpg.Pool] = {}
        self.lag: list[dict[str, Any]] = []  # one sample per second while `sample_lag` runs

    async def open(self) -> None:
        for service in RELAYED:
            url = self.target.database_url(service)
            assert url is not None, "the observer needs the databases"
            self.pools[service] = await asyncpg.create_pool(url, min_size=1, max_size=2)

    async def close(self) -> None:
        for pool in self.pools.values():
            await pool.close()

    async def pending_orders(self) -> int:
        async with self.pools["order"].acquire() as conn:
            return await order_store.pending_count(conn)

    async def commits(self) -> int:
        """Transactions committed so far in the order and account databases (PostgreSQL's statistics)."""
        total = 0
        for pool in self.pools.values():
            total += await pool.fetchval(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            )
        return total

    async def held_reservations(self) -> int:
        async with self.pools["account"].acquire() as conn:
            return await account_store.held_count(conn)

    async def wait_quiet(self, within: float) -> float | None:
        """Seconds until no order is PENDING and no reservation HELD (immediate mode), None on timeout."""
        started = time.perf_counter()
        while time.perf_counter() - started < within:
            if await self.pending_orders() == 0 and await self.held_reservations() == 0:
                return time.perf_counter() - started
            await asyncio.sleep(0.1)
        return None

    async def outcomes(self, order_ids: list[str]) -> list[Outcome]:
        async with self.pools["order"].acquire() as conn:
            orders = await order_store.by_ids(conn, order_ids)
        return [
            Outcome(str(o.id), o.status.value, o.created_at, o.updated_at, o.executed_price, o.reserved)
            for o in orders
        ]

    async def wait_terminal(self, order_ids: list[str], within: float) -> float | None:
        """Seconds until none of these orders is PENDING, None on timeout (others may rest meanwhile)."""
        started = time.perf_counter()
        while time.perf_counter() - started < within:
            async with self.pools["order"].acquire() as conn:
                pending = await conn.fetchval(
                    "SELECT count(*) FROM orders WHERE id = ANY($1::uuid[]) AND status = 'PENDING'", order_ids
                )
            if pending == 0:
                return time.perf_counter() - started
            await asyncio.sleep(0.2)
        return None

    async def settled_at(self, order_ids: list[str]) -> dict[str, datetime]:
        """When the account settled (or released) each order's reservation."""
        async with self.pools["account"].acquire() as conn:
            return await account_store.settled_at(conn, order_ids)

    async def relay_lag_now(self) -> dict[str, Any]:
        sample: dict[str, Any] = {"t": time.time()}
        for service, pool in self.pools.items():
            position = await relay_position(pool, slot_name(service))
            if position.slot_exists:
                sample[service] = {
                    "lag_bytes": position.lag_bytes or 0,
                    "outbox_rows": position.backlog,
                    "oldest_s": position.oldest_seconds or 0.0,
                }
        return sample

    async def sample_lag(self, stop: asyncio.Event, every: float = 1.0) -> None:
        while not stop.is_set():
            self.lag.append(await self.relay_lag_now())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    def lag_summary(self, since: float, until: float) -> dict[str, Any]:
        window = [s for s in self.lag if since <= s["t"] <= until]
        summary: dict[str, Any] = {}
        for service in self.pools:
            points = [s[service] for s in window if service in s]
            if points:
                summary[service] = {
                    "max_lag_bytes": max(p["lag_bytes"] for p in points),
                    "max_outbox_rows": max(p["outbox_rows"] for p in points),
                    "max_oldest_unrelayed_ms": round(max(p["oldest_s"] for p in points) * 1000, 1),
                }
        return summary


async def _metrics(client: Client, service: str) -> list[Metric] | None:
    """The metric families a service exposes on /metrics, of each of its replicas in a cluster (each on its
    own port: the shared one would answer from either); None: unreadable."""
    families: list[Metric] = []
    for base in client.target.replica_urls(service):
        try:
            response = await client.request("GET", f"{base}/metrics")
        except TransportError:
            return None
        if response.status_code != 200:
            return None
        families += text_string_to_metric_families(response.text)
    return families


async def consumer_retries(client: Client) -> int | None:
    """Deliveries the order and account consumers have put back for a retry so far (a retry waits at least
    the first retry delay, 1 s, and shows in create→MATCHED), from their /metrics; None if unreadable."""
    total = 0.0
    for service in ("order", "account"):
        families = await _metrics(client, service)
        if families is None:
            return None
        for family in families:
            if family.name == "oms_consumer_messages":
                total += sum(
                    sample.value
                    for sample in family.samples
                    if sample.name.endswith("_total") and sample.labels.get("outcome") == "retried"
                )
    return int(total)


async def histogram_buckets(client: Client, service: str, name: str) -> dict[float, float] | None:
    """The cumulative buckets (upper bound → count) of histogram `name` on `service`'s /metrics."""
    families = await _metrics(client, service)
    if families is None:
        return None
    buckets: dict[float, float] = defaultdict(float)  # summed over the replicas
    for family in families:
        if family.name == name:
            for sample in family.samples:
                if sample.name == f"{name}_bucket":
                    buckets[float(sample.labels["le"])] += sample.value
    return dict(buckets)


async def outcomes_by_api(
    client: Client, admin: Principal, customers: list[Principal], order_ids: list[str], within: float
) -> tuple[list[Outcome], float | None]:
    """Without database access: every customer's orders through the list API, until none is PENDING."""
    wanted = set(order_ids)
    started = time.perf_counter()
    while True:
        listed = await asyncio.gather(*(client.all_orders(admin, c.id) for c in customers))
        found = [
            Outcome(
                o["id"],
                o["status"],
                datetime.fromisoformat(o["createDate"]),
                datetime.fromisoformat(o["updateDate"]),
                o.get("executedPrice"),
                bool(o.get("fundsReserved", True)),
            )
            for orders in listed
            for o in orders
            if o["id"] in wanted
        ]
        drained = time.perf_counter() - started
        if all(o.status != "PENDING" for o in found) or drained > within:
            return found, (drained if drained <= within else None)
        await asyncio.sleep(0.5)
