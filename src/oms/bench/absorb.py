"""How many quotes a second the order service absorbs: quotes of every symbol at rising rates, step by step,
until its quote handling lags.

The observable is the order service acting on a quote: on a probe symbol that nothing else quotes, a ladder
of resting BUYs, and `probes_per_second` times a second a probe quote (published in the same flow as the
others, in order) crossing the best level left. The order service reads the market's quotes one after the
other, so a probe is applied only after every quote published before it: its quote→execution latency (the
probe's `time` to the order's `updated_at`) is the age of the quotes the service is applying, plus its
execution. A step is absorbed when the probes' p99 stays within `max_lag_ms`; the first step that is not
ends the climb. A step the bench could not publish at its rate (the publisher is then the limit, not the
service) says so.

Every reader of the market stream (order, account, back office, market services) receives every quote: the
CPU each used during each step is reported beside it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from oms.bench.client import Client, Principal
from oms.bench.ladder import Crossing, Ladder
from oms.bench.observe import Observer, histogram_buckets
from oms.bench.processes import ProcessSampler
from oms.bench.quotes import QuotePublisher
from oms.bench.resting import IN_SERVICE, cancel_resting, in_service, place_ladder, wait_resting
from oms.bench.stats import latency_summary
from oms.kernel.market import Quote
from oms.kernel.money import Side

SETTLE_SECONDS = 2.0  # quiet between steps, so one step's backlog does not count against the next


@dataclass(frozen=True)
class AbsorbConfig:
    rates: tuple[float, ...] = (500.0, 1000.0, 2000.0, 4000.0, 8000.0)  # quotes/s over all symbols
    seconds: float = 10.0  # per step
    probes_per_second: float = 10.0
    max_lag_ms: float = 100.0
    drain_timeout: float = 60.0


async def run_absorb(
    config: AbsorbConfig,
    *,
    probe: str,
    symbols: list[str],
    client: Client,
    customers: list[Principal],
    publisher: QuotePublisher,
    observer: Observer,
    sampler: ProcessSampler,
    console: Console,
) -> dict[str, Any]:
    """The climb; per step the offered and published rates, the probes' latency, CPU per process."""
    market = publisher.market
    probes = int(config.probes_per_second * config.seconds * len(config.rates)) + 10
    # BUYs only: each probe lowers the ask to the next level.
    ladder = Ladder.lay_out(market.instruments[probe], market.quotes[probe], probes, sell=False)
    await publisher.publish(publisher.quote(probe, ladder.base.bid, ladder.base.ask, ladder.base.last))
    console.print(f"absorb: {len(ladder.levels[Side.BUY])} probe orders resting on {probe} …")
    owners: dict[str, Principal] = {}
    await place_ladder(ladder, client, customers, market.lot(probe), owners)
    await wait_resting(observer, ladder.resting_ids(), config.drain_timeout)
    steps = []
    for rate in config.rates:
        step = await _step(config, rate, probe, symbols, ladder, client, publisher, observer, sampler)
        steps.append(step)
        lag = step["probe"]
        console.print(
            f"  {rate:,.0f} quotes/s offered, {step['published_per_s']:,.0f} published: "
            f"probe quote→execution p50 {lag.get('p50_ms')} ms, p99 {lag.get('p99_ms')} ms; "
            f"order service {step['cpu_pct'].get('order', 0)} % of a core"
        )
        if not step["absorbed"]:
            break
    await cancel_resting(client, owners, ladder, observer)
    absorbed = [s["published_per_s"] for s in steps if s["absorbed"] and not s["publisher_bound"]]
    return {
        "probe_symbol": probe,
        "symbols_quoted": len(symbols),
        "config": {**config.__dict__, "rates": list(config.rates)},
        "steps": steps,
        "absorbed_quotes_per_s": max(absorbed, default=None),
        "first_lagging_step": next((s["offered_per_s"] for s in steps if not s["absorbed"]), None),
    }


async def _step(
    config: AbsorbConfig,
    rate: float,
    probe: str,
    symbols: list[str],
    ladder: Ladder,
    client: Client,
    publisher: QuotePublisher,
    observer: Observer,
    sampler: ProcessSampler,
) -> dict[str, Any]:
    crossings: list[Crossing] = []
    every, next_probe = 1 / config.probes_per_second, time.monotonic()
    turn = 0

    def probes() -> list[Quote]:
        nonlocal next_probe, turn
        if time.monotonic() < next_probe:
            return []
        next_probe += every
        turn += 1
        crossing = ladder.next_crossing(Side.BUY)
        if crossing is None:
            return [publisher.quote(probe, *ladder.ordinary(turn))]
        bid, ask, level = crossing
        quote = publisher.quote(probe, bid, ask)
        crossings.append(Crossing(Side.BUY, level.price, quote.time.timestamp(), tuple(level.order_ids)))
        return [quote]

    stop = asyncio.Event()
    buckets_before = await histogram_buckets(client, "order", IN_SERVICE)
    published_before = publisher.published
    started, wall_start = time.monotonic(), time.time()
    task = asyncio.create_task(publisher.background(symbols, lambda: rate, stop, extra=probes))
    await asyncio.sleep(config.seconds)
    stop.set()
    await task
    elapsed, wall_end = time.monotonic() - started, time.time()
    published = (publisher.published - published_before) / elapsed
    crossed = [i for c in crossings for i in c.order_ids]
    await observer.wait_terminal(crossed, config.drain_timeout)
    by_id = {o.id: o for o in await observer.outcomes(crossed)}
    latencies = [
        by_id[i].updated.timestamp() - c.quoted_at
        for c in crossings
        for i in c.order_ids
        if i in by_id and by_id[i].status == "MATCHED"
    ]
    summary = latency_summary(latencies)
    buckets_after = await histogram_buckets(client, "order", IN_SERVICE)
    await asyncio.sleep(SETTLE_SECONDS)
    cpu = {role: figures["cpu_pct"] for role, figures in sampler.summary(wall_start, wall_end).items()}
    executed_all = len(latencies) == len(crossed)
    return {
        "offered_per_s": rate,
        "published_per_s": round(published, 1),
        "publisher_bound": published < 0.9 * rate,
        "probe": summary,
        "probes_not_executed": len(crossed) - len(latencies),
        "in_order_service": in_service(buckets_before, buckets_after),
        "absorbed": executed_all and bool(latencies) and summary["p99_ms"] <= config.max_lag_ms,
        "cpu_pct": cpu,
    }
