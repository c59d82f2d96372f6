"""The resting phase (`market` mode): resting orders on one symbol crossed by quotes, while marketable
orders flow.

Twice the same `duration`: quotes of the symbol at `quotes_per_second` (published by the bench as the market
feed) and marketable orders at `rate` on the workload's symbols (that one among them) — first with nothing
resting, then with `resting` orders resting on the symbol (`ladder.py`), a quote crossing the best level
left `crossings_per_second` times a second. It reports:

- quote→execution of the crossed orders: the crossing quote's `time` (stamped by the bench just before it is
  published, as the feed stamps its quotes) to the order's `updated_at` (stamped by the order service in the
  transaction that executes it, just before the commit). It includes the broker storing the quote, its
  delivery to the order service, the look-up in the book of resting orders, the wait for the execution task
  and the transaction up to its commit; not the commit's own flush, nor the events that follow.
- create→MATCHED of the marketable orders with and without the resting orders beside them.
- that every crossed order executed at its crossing quote's price, and no other resting order executed.

The orders still resting at the end are canceled, so later phases start with none.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from rich.console import Console

from oms.bench import jetstream
from oms.bench.client import Client, Principal
from oms.bench.ladder import Crossing, Ladder
from oms.bench.load import Load, LoadConfig, Workload
from oms.bench.observe import Observer, Outcome, histogram_buckets
from oms.bench.phase import timeline
from oms.bench.quotes import QuotePublisher
from oms.bench.stats import bucket_percentile, latency_summary
from oms.kernel.money import Side
from oms.kernel.nats_access import NatsAccess

PLACING_CLIENTS = 32
# The order service's own histogram: from a crossing quote's arrival to the commit of what it executed.
IN_SERVICE = "oms_order_quote_to_execution_seconds"


@dataclass(frozen=True)
class RestingConfig:
    resting: int = 10_000
    quotes_per_second: float = 100.0
    crossings_per_second: float = 5.0
    rate: float = 100.0  # marketable orders/s alongside
    duration: float = 30.0
    list_rate: float = 0.0
    market_ratio: float = 0.1
    drain_timeout: float = 120.0


async def run_resting(
    config: RestingConfig,
    *,
    symbol: str,
    client: Client,
    admin: Principal,
    customers: list[Principal],
    workload: Workload,
    publisher: QuotePublisher,
    observer: Observer,
    console: Console,
    events: NatsAccess | None = None,
) -> dict[str, Any]:
    """Both halves of the phase; the figures and checks as a dict. With `events` (the operator's access to
    the broker) also quote → `order.matched` stored in JetStream, which includes the executing commit."""
    market = workload.market
    ladder = Ladder.lay_out(market.instruments[symbol], market.quotes[symbol], config.resting)
    levels = {side.value: len(ladder.levels[side]) for side in Side}
    first_sequence = market.quotes[symbol].sequence
    await publisher.publish(publisher.quote(symbol, ladder.base.bid, ladder.base.ask, ladder.base.last))
    load_config = LoadConfig(
        config.duration, rate=config.rate, list_rate=config.list_rate, market_ratio=config.market_ratio
    )
    console.print(f"resting phase on {symbol}: {config.duration:g}s without resting orders …")
    without = await _half(
        config, load_config, ladder, client, admin, customers, workload, publisher, cross=False
    )
    console.print(f"  placing {config.resting:,} resting orders on {symbol} …")
    owners: dict[str, Principal] = {}
    placed_in = await place_ladder(ladder, client, customers, market.lot(symbol), owners)
    rested_in = await wait_resting(observer, ladder.resting_ids(), config.drain_timeout)
    console.print(
        f"  placed in {placed_in:.1f}s, all resting after {rested_in}s; {config.duration:g}s with them …"
    )
    crossings: list[Crossing] = []
    buckets_before = await histogram_buckets(client, "order", IN_SERVICE)
    seq_before = await jetstream.last_seq(events) if events else 0
    with_resting = await _half(
        config, load_config, ladder, client, admin, customers, workload, publisher, cross=True, into=crossings
    )
    flows = {}
    for name, load in (("without resting", without), ("with resting", with_resting)):
        await observer.wait_terminal(load.result.order_ids, config.drain_timeout)
        outcomes = await observer.outcomes(load.result.order_ids)
        flows[name] = _flow_summary(load, outcomes)
    crossed = await _crossed_summary(observer, crossings, ladder, config.drain_timeout)
    if events is not None:
        stored = await jetstream.matched_stored_at(
            events, seq_before, await jetstream.last_seq(events), {i for c in crossings for i in c.order_ids}
        )
        crossed["quote_to_matched_event_stored"] = latency_summary(
            stored[i].timestamp() - c.quoted_at for c in crossings for i in c.order_ids if i in stored
        )
    crossed["in_order_service"] = in_service(
        buckets_before, await histogram_buckets(client, "order", IN_SERVICE)
    )
    console.print("  canceling the orders still resting …")
    canceled = await cancel_resting(client, owners, ladder, observer)
    return {
        "phase": f"resting {config.resting:,} on {symbol}",
        "config": {**config.__dict__, "symbol": symbol},
        "levels": levels,
        "placed_in_s": round(placed_in, 2),
        "marketable": flows,
        "crossed": crossed,
        "quotes_of_the_symbol": market.quotes[symbol].sequence - first_sequence,
        "canceled_after": canceled,
    }


async def _half(
    config: RestingConfig,
    load_config: LoadConfig,
    ladder: Ladder,
    client: Client,
    admin: Principal,
    customers: list[Principal],
    workload: Workload,
    publisher: QuotePublisher,
    *,
    cross: bool,
    into: list[Crossing] | None = None,
) -> Load:
    load = Load(client, customers, load_config, workload, admin=admin)
    stop = asyncio.Event()
    quoting = asyncio.create_task(_quote(config, ladder, publisher, stop, cross=cross, into=into))
    try:
        await load.run()
    finally:
        stop.set()
        await quoting
    return load


async def _quote(
    config: RestingConfig,
    ladder: Ladder,
    publisher: QuotePublisher,
    stop: asyncio.Event,
    *,
    cross: bool,
    into: list[Crossing] | None,
) -> None:
    """Quotes of the ladder's symbol at the configured rate; every so many a crossing one (when `cross`),
    the sides in turn. Each quote is published (and acknowledged) before the next is made."""
    symbol = ladder.instrument.symbol
    every = max(1, round(config.quotes_per_second / config.crossings_per_second))
    start, sent = time.perf_counter(), 0
    while not stop.is_set():
        delay = start + sent / config.quotes_per_second - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        side = Side.BUY if (sent // every) % 2 == 0 else Side.SELL
        crossing = ladder.next_crossing(side) if cross and sent % every == every - 1 else None
        if crossing is not None:
            bid, ask, level = crossing
            quote = publisher.quote(symbol, bid, ask)
            if into is not None:
                into.append(Crossing(side, level.price, quote.time.timestamp(), tuple(level.order_ids)))
        else:
            quote = publisher.quote(symbol, *ladder.ordinary(sent))
        await publisher.publish(quote)
        sent += 1


async def place_ladder(
    ladder: Ladder, client: Client, customers: list[Principal], lot: Decimal, owners: dict[str, Principal]
) -> float:
    """Place the ladder's orders, `PLACING_CLIENTS` at a time (noting each one's owner); seconds it took."""
    symbol = ladder.instrument.symbol
    todo = list(enumerate(ladder.places()))
    started = time.perf_counter()

    async def worker() -> None:
        while todo:
            n, (side, price) = todo.pop()
            customer = customers[n % len(customers)]
            response = await client.create_order(customer, customer.id, side.value, symbol, lot, price)
            response.raise_for_status()
            order_id = response.json()["id"]
            ladder.placed(side, price, order_id)
            owners[order_id] = customer

    await asyncio.gather(*(worker() for _ in range(PLACING_CLIENTS)))
    return time.perf_counter() - started


def in_service(before: dict[float, float] | None, after: dict[float, float] | None) -> dict[str, Any]:
    """What the order service's histogram of quote arrival→commit says of the quotes between two readings:
    how many, and the bucket bounds its p50 and p99 fall under (coarse buckets: 1, 2, 5, 10, 20 ms…)."""
    if before is None or after is None:
        return {}
    count = after.get(math.inf, 0.0) - before.get(math.inf, 0.0)
    p50, p99 = bucket_percentile(before, after, 50), bucket_percentile(before, after, 99)
    return {
        "crossing_quotes": int(count),
        "p50_ms_at_most": None if p50 is None else p50 * 1000,
        "p99_ms_at_most": None if p99 is None else p99 * 1000,
    }


async def wait_resting(observer: Observer, order_ids: list[str], within: float) -> float | None:
    """Seconds until all these orders are reserved and still PENDING (resting), None on timeout."""
    started = time.perf_counter()
    while time.perf_counter() - started < within:
        outcomes = await observer.outcomes(order_ids)
        if len(outcomes) == len(order_ids) and all(o.status == "PENDING" and o.reserved for o in outcomes):
            return round(time.perf_counter() - started, 2)
        if any(o.status != "PENDING" for o in outcomes):
            raise RuntimeError("a resting order of the bench did not rest (executed or canceled at once)")
        await asyncio.sleep(0.5)
    return None


def _flow_summary(load: Load, outcomes: list[Outcome]) -> dict[str, Any]:
    matched = [o for o in outcomes if o.status == "MATCHED"]
    return {
        "accepted": load.result.created,
        "matched": len(matched),
        "not_matched": len(outcomes) - len(matched),
        "errors": dict(load.result.errors),
        "create_to_matched": latency_summary(o.latency for o in matched),
        "http_create_order": latency_summary(load.result.create_latency),
        "timeline": timeline(load.result, outcomes),
    }


async def _crossed_summary(
    observer: Observer, crossings: list[Crossing], ladder: Ladder, within: float
) -> dict[str, Any]:
    """Quote→execution of every crossed order, and the checks: each executed at its quote's price, no
    order left on the ladder executed."""
    crossed_ids = [i for c in crossings for i in c.order_ids]
    await observer.wait_terminal(crossed_ids, within)
    by_id = {o.id: o for o in await observer.outcomes(crossed_ids)}
    latencies, wrong_price, not_executed = [], 0, 0
    for crossing in crossings:
        for order_id in crossing.order_ids:
            outcome = by_id.get(order_id)
            if outcome is None or outcome.status != "MATCHED":
                not_executed += 1
                continue
            if outcome.executed_price != crossing.price:
                wrong_price += 1
            latencies.append(outcome.updated.timestamp() - crossing.quoted_at)
    left = await observer.outcomes(ladder.resting_ids())
    return {
        "crossing_quotes": len(crossings),
        "orders_crossed": len(crossed_ids),
        "quote_to_execution": latency_summary(latencies),
        "executed_at_another_price": wrong_price,
        "not_executed": not_executed,
        "uncrossed_not_resting": sum(1 for o in left if o.status != "PENDING"),
        "still_resting": sum(1 for o in left if o.status == "PENDING"),
    }


async def cancel_resting(
    client: Client, owners: dict[str, Principal], ladder: Ladder, observer: Observer
) -> int:
    """Cancel the ladder's orders still resting (each by its owner); how many were canceled."""
    todo = [o.id for o in await observer.outcomes(ladder.resting_ids()) if o.status == "PENDING"]
    canceled = 0

    async def worker() -> None:
        nonlocal canceled
        while todo:
            order_id = todo.pop()
            response = await client.cancel_order(owners[order_id], order_id)
            canceled += response.status_code == 200

    await asyncio.gather(*(worker() for _ in range(PLACING_CLIENTS)))
    await observer.wait_quiet(60)
    return canceled
