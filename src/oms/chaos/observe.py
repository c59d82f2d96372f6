"""Watching the system under chaos: the consumers' counters (scraped from /metrics across restarts), the
broker's delivery counts, and the wait for quiescence once the faults stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
import nats.errors

from oms.account import store as account_store
from oms.bench.system import Target
from oms.chaos.workload import Workload
from oms.kernel.nats_access import NatsAccess, connect_nats
from oms.kernel.outbox import unrelayed
from oms.kernel.topology import CONSUMERS, EVENTS_STREAM
from oms.order import store as order_store

RECENT = timedelta(seconds=15)  # an outbox row older than this is not "on its way" any more
_COUNTER = re.compile(r'^oms_consumer_messages_total\{consumer="(\w+)",outcome="(\w+)"\} ([0-9.e+]+)$', re.M)


def consuming(target: Target) -> list[str]:
    """The URLs of the services that consume events, each replica's own on a cluster."""
    return [url for service in ("order", "account") for url in target.replica_urls(service)]


class ConsumerMetrics:
    """Sums `oms_consumer_messages_total` of the order and account services (of each replica, on a cluster)
    over their lifetimes: a counter that went down belongs to a restarted process, so what the last one had
    counted is kept. (What a killed process counted after its last scrape is lost: these are lower
    bounds.)"""

    def __init__(self, target: Target) -> None:
        self.urls = consuming(target)
        self.last: dict[tuple[str, str, str], float] = {}
        self.base: dict[tuple[str, str, str], float] = defaultdict(float)

    def totals(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = defaultdict(dict)
        for key, value in self.last.items():
            _, consumer, outcome = key
            result[consumer][outcome] = result[consumer].get(outcome, 0) + int(self.base[key] + value)
        return dict(result)

    async def scrape(self, http: httpx.AsyncClient) -> None:
        for url in self.urls:
            with contextlib.suppress(httpx.HTTPError):
                text = (await http.get(f"{url}/metrics", timeout=2)).text
                for consumer, outcome, value in _COUNTER.findall(text):
                    key, now = (url, consumer, outcome), float(value)
                    if now < self.last.get(key, 0.0):
                        self.base[key] += self.last[key]
                    self.last[key] = now

    async def run(self, stop: asyncio.Event, every: float = 1.0) -> None:
        async with httpx.AsyncClient() as http:
            while not stop.is_set():
                await self.scrape(http)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every)
            await self.scrape(http)


async def consumer_stats(access: NatsAccess) -> dict[str, dict[str, Any]]:
    """Per durable consumer: deliveries made (redeliveries included), messages on its subjects, and what is
    still pending or unacknowledged."""
    nc = await connect_nats(access, once=True)
    try:
        js = nc.jetstream()
        stats = {}
        for consumer, reads in CONSUMERS.items():
            info = await js.consumer_info(EVENTS_STREAM, consumer)
            stream = await js.stream_info(EVENTS_STREAM, subjects_filter=reads.subjects)
            messages = sum((stream.state.subjects or {}).values())
            deliveries = info.delivered.consumer_seq if info.delivered else 0
            stats[consumer] = {
                "deliveries": deliveries,
                "messages": messages,
                "redeliveries": max(0, deliveries - messages),
                "pending": info.num_pending or 0,
                "unacknowledged": info.num_ack_pending or 0,
                "ack_floor_seq": info.ack_floor.stream_seq if info.ack_floor else 0,
            }
        return stats
    finally:
        await nc.close()


async def _healthy(http: httpx.AsyncClient, target: Target) -> bool:
    try:
        answers = [await http.get(f"{url}/health", timeout=2) for url in consuming(target)]
    except httpx.HTTPError:
        return False
    return all(a.status_code == 200 for a in answers)


async def _settled(target: Target) -> dict[str, int]:
    """What is still on its way: PENDING orders, HELD reservations, outbox rows written in the last seconds
    (an older row is not "on its way" any more: the checks after quiescence tell whether it was lost or left
    behind after being relayed)."""
    order_url, account_url = target.database_url("order"), target.database_url("account")
    assert order_url and account_url
    order = await asyncpg.connect(order_url, timeout=5)
    account = await asyncpg.connect(account_url, timeout=5)
    try:
        return {
            "pending_orders": await order_store.pending_count(order),
            "order_outbox": len(await unrelayed(order, written_within=RECENT)),
            "held_reservations": await account_store.held_count(account),
            "account_outbox": len(await unrelayed(account, written_within=RECENT)),
        }
    finally:
        await order.close()
        await account.close()


async def wait_quiet(target: Target, within: float) -> tuple[float | None, dict[str, Any]]:
    """Seconds until the services answer, nothing is on its way in either database and both consumers have
    nothing pending or unacknowledged (twice in a row); None and the last state seen on timeout."""
    assert target.nats
    started = time.monotonic()
    state: dict[str, Any] = {}
    calm = 0
    async with httpx.AsyncClient() as http:
        while time.monotonic() - started < within:
            try:
                state = {"healthy": await _healthy(http, target), **await _settled(target)}
                consumers = await consumer_stats(target.nats)
                state["consumers_busy"] = sum(c["pending"] + c["unacknowledged"] for c in consumers.values())
            except (OSError, asyncpg.PostgresError, nats.errors.Error, TimeoutError) as exc:
                state = {"error": f"{type(exc).__name__}: {exc}"}
                calm = 0
                await asyncio.sleep(1)
                continue
            quiet = state["healthy"] and not any(v for k, v in state.items() if k != "healthy")
            calm = calm + 1 if quiet else 0
            if calm >= 2:
                return time.monotonic() - started, state
            await asyncio.sleep(0.5)
    return None, state


async def sweep_resting(target: Target, workload: Workload, within: float) -> int:
    """Once the faults have stopped: cancel the orders that rest on the market (reserved LIMIT orders that
    are not IOC: the market may never cross them) until no order is PENDING, or `within` seconds. An order
    still PENDING that may not rest (IOC, MARKET, or never answered by the account) is left for the checks.
    Returns how many cancels were sent."""
    url = target.database_url("order")
    assert url
    swept: set[str] = set()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            conn = await asyncpg.connect(url, timeout=5)
            try:
                pending = await order_store.pending_count(conn)
                resting = [o for o in await order_store.reserved_pending(conn) if o.rests]
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError, TimeoutError):
            await asyncio.sleep(1)
            continue
        if not pending:
            break
        todo = [o for o in resting if str(o.id) not in swept]
        swept |= {str(o.id) for o in todo}
        await asyncio.gather(*(workload.sweep(str(o.customer_id), str(o.id)) for o in todo))
        await asyncio.sleep(0.5)
    return len(swept)


def server_errors(log_dir: Path, limit: int = 20) -> list[str]:
    """The requests the services answered with a 500, as they logged them: component, request and the last
    line of the exception (the logs are JSON lines)."""
    found: list[str] = []
    for log_file in sorted(log_dir.glob("*.log")):
        for line in log_file.read_text(errors="replace").splitlines():
            if '"unhandled error' not in line:
                continue
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                cause = str(entry.get("exception", "")).strip().splitlines()[-1:] or [""]
                found.append(f"{entry.get('component')}: {entry.get('message')}: {cause[0]}")
    return found[:limit]
