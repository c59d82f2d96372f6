"""One load phase, from the first order sent to the last one settled, and what it measured."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from oms.bench import jetstream
from oms.bench.client import Client, Principal
from oms.bench.load import Load, LoadConfig, PhaseResult, Workload
from oms.bench.observe import Observer, Outcome, consumer_retries, outcomes_by_api
from oms.bench.processes import ProcessSampler
from oms.bench.stats import latency_summary, per_second, percentile, steady_rate
from oms.bench.system import Target

STATS_DELAY = 1.5  # seconds: PostgreSQL's backends report their commit counts at most once a second


async def run_phase(
    config: LoadConfig,
    *,
    target: Target,
    client: Client,
    admin: Principal,
    customers: list[Principal],
    workload: Workload,
    observer: Observer | None,
    sampler: ProcessSampler,
    console: Console,
    drain_timeout: float,
) -> dict[str, Any]:
    """Send the load, wait until every order is terminal and settled, and summarise it."""
    seq_before = await jetstream.last_seq(target.nats) if target.nats else None
    commits_before = await observer.commits() if observer is not None else None
    retries_before = await consumer_retries(client)
    load = Load(client, customers, config, workload, admin=admin)
    terminal = {"count": 0, "checked": 0.0}

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(config.name, total=config.duration, status="")

        def tick(result: PhaseResult, elapsed: float) -> None:
            progress.update(
                task,
                completed=min(elapsed, config.duration),
                status=f"{result.created} orders sent, {result.created / max(elapsed, 0.001):.0f}/s"
                + (f", {terminal['count']} terminal" if observer else "")
                + (f", {sum(result.errors.values())} errors" if result.errors else ""),
            )

        async def count_terminal() -> None:
            while not work_done:
                if observer is not None and time.perf_counter() - terminal["checked"] > 0.5:
                    terminal["checked"] = time.perf_counter()
                    terminal["count"] = load.result.created - await observer.pending_orders()
                await asyncio.sleep(0.5)

        work_done = False
        counter = asyncio.create_task(count_terminal())
        try:
            result = await load.run(tick)
        finally:
            work_done = True
            await counter

    console.print(f"  waiting for {result.created} orders to finish …")
    settled: dict[str, datetime] = {}
    commits: int | None = None
    if observer is not None:
        drain = await observer.wait_quiet(drain_timeout)
        outcomes = await observer.outcomes(result.order_ids)
        settled = await observer.settled_at(result.order_ids)
        await asyncio.sleep(STATS_DELAY)
        commits = await observer.commits() - (commits_before or 0)
    else:
        outcomes, drain = await outcomes_by_api(client, admin, customers, result.order_ids, drain_timeout)
    finished = time.time()
    events: dict[str, list[float]] = {}
    if target.nats and seq_before is not None:
        events = await jetstream.event_latencies(
            target.nats, seq_before, await jetstream.last_seq(target.nats)
        )
    summary = summarize(result, outcomes, settled, events, drain)
    summary["orders"]["commits_per_order"] = round(commits / max(result.created, 1), 2) if commits else None
    retries_after = await consumer_retries(client)
    if retries_before is not None and retries_after is not None:
        summary["orders"]["consumer_retries"] = retries_after - retries_before
    summary["processes"] = sampler.summary(result.started, result.ended)
    if observer is not None:
        summary["relay"]["lag"] = observer.lag_summary(result.started, finished)
    return summary


def summarize(
    result: PhaseResult,
    outcomes: list[Outcome],
    settled: dict[str, datetime],
    events: dict[str, list[float]],
    drain: float | None,
) -> dict[str, Any]:
    """The phase's figures: end-to-end throughput and latency, HTTP latency, relay latency, timeline."""
    by_status: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        by_status[outcome.status].append(outcome)
    done = by_status["MATCHED"] + by_status["CANCELED"]
    done_at = [o.updated.timestamp() for o in done]
    elapsed = max(result.ended - result.started, 1e-9)
    terminal_per_second = per_second(done_at, result.started, result.ended)
    first = min((o.created.timestamp() for o in outcomes), default=result.started)
    overall = len(done) / (max(done_at) - first) if len(done_at) > 1 else 0.0
    all_events = [v for values in events.values() for v in values]
    settle = [(settled[o.id] - o.created).total_seconds() for o in by_status["MATCHED"] if o.id in settled]
    return {
        "phase": result.config.name,
        "config": {
            "duration_s": result.config.duration,
            "rate": result.config.rate,
            "concurrency": None if result.config.rate else result.config.concurrency,
            "list_rate": result.config.list_rate,
            "reject_ratio": result.config.reject_ratio,
            "market_ratio": result.config.market_ratio,
        },
        "orders": {
            "accepted": result.created,
            "matched": len(by_status["MATCHED"]),
            "canceled": len(by_status["CANCELED"]),
            "still_pending": len(by_status["PENDING"]),
            "missing": result.created - len(outcomes),
            "drain_s": round(drain, 2) if drain is not None else None,
            "sent_per_s": round(result.created / elapsed, 1),
            "terminal_per_s_steady": round(steady_rate(terminal_per_second), 1),
            "terminal_per_s_overall": round(overall, 1),
        },
        "latency": {
            "create_to_matched": latency_summary(o.latency for o in by_status["MATCHED"]),
            "create_to_canceled": latency_summary(o.latency for o in by_status["CANCELED"]),
            "create_to_settled": latency_summary(settle),
        },
        "http": {
            "create_order": latency_summary(result.create_latency),
            "list_orders": latency_summary(result.list_latency),
            "errors": dict(result.errors),
            "waited_for_capacity": result.waited_for_capacity,
        },
        "relay": {
            "events": len(all_events),
            "events_per_order": round(len(all_events) / max(len(outcomes), 1), 2),
            "occurred_to_stored": latency_summary(all_events),
            "by_type": {name: latency_summary(values) for name, values in sorted(events.items())},
        },
        "timeline": timeline(result, outcomes),
    }


def timeline(result: PhaseResult, outcomes: list[Outcome]) -> dict[str, list[float]]:
    """Per second of the phase: orders accepted, orders finished, and p50/p99 create→MATCHED of the orders
    created in that second (for the plot)."""
    start, end = result.started, result.ended
    sent = per_second(result.sent_at, start, end)
    finished = per_second((o.updated.timestamp() for o in outcomes if o.status != "PENDING"), start, end)
    by_second: dict[int, list[float]] = defaultdict(list)
    for outcome in outcomes:
        if outcome.status == "MATCHED":
            by_second[int(outcome.created.timestamp() - start)].append(outcome.latency * 1000)
    p50, p99 = [], []
    for second in range(len(sent)):
        values = sorted(by_second.get(second, []))
        p50.append(round(percentile(values, 50), 2) if values else 0.0)
        p99.append(round(percentile(values, 99), 2) if values else 0.0)
    return {
        "sent": [float(v) for v in sent],
        "finished": [float(v) for v in finished],
        "p50_ms": p50,
        "p99_ms": p99,
    }
