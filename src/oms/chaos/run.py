"""`oms chaos`: a workload under faults, then quiescence, then every check. The same code runs full-size from
the command line and CI-sized in `tests/e2e/test_chaos.py`."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from oms.bench.client import Client
from oms.bench.system import Target
from oms.chaos.availability import availability
from oms.chaos.faults import FaultInjector, FaultLog, duplicate_events, schedule
from oms.chaos.market import MarketWatch, QuoteTap, closes_in, record_quotes, recorded_quotes
from oms.chaos.observe import ConsumerMetrics, consumer_stats, sweep_resting, wait_quiet
from oms.chaos.verify import Rules, verify
from oms.chaos.workload import Cast, Ledger, Workload
from oms.kernel.settings import ExecutionMode, MarketClose, Settings

CLOSE_INTO_LOAD = 0.4  # how far into the workload the market closes


@dataclass(frozen=True)
class ChaosConfig:
    orders: int = 10_000
    customers: int = 200
    duration: float = 720.0  # seconds over which the workload and the faults are spread
    kills: int = 100
    nats_restarts: int = 5
    pg_restarts: int = 3
    duplicates: int = 300
    seed: int = 5
    drain_timeout: float = 300.0
    in_flight: int = 64
    requesters: int = 8  # customers who sign in and ask for deposits themselves
    withdrawal_threshold: Decimal = Decimal(1000)  # TRY: larger withdrawals wait for an admin
    execution: ExecutionMode = ExecutionMode.MARKET
    symbols: int = 6  # instruments traded: two held by every customer, one by none
    # A MARKET BUY's collar: none (it reserves the ask it was placed at), so that an ask that rises before
    # its reservation cancels it ("price moved beyond the collar") and one that falls executes it below
    # what it reserved.
    collar: Decimal = Decimal(0)
    market_close: str = ""  # OMS_MARKET_CLOSE; `scheduled` sets one inside the run (DAY orders expire)
    cluster: bool = False  # against `oms up --cluster` (faults.py: what is killed there)

    @classmethod
    def ci(cls) -> ChaosConfig:
        """The size `make test` runs: ≥ 1,000 orders, ≥ 10 kills, one restart of each server, ~2 minutes."""
        return cls(
            orders=1000, customers=50, duration=50.0, kills=12, nats_restarts=1, pg_restarts=1, duplicates=40
        )

    @classmethod
    def sized(cls, ci: bool, cluster: bool) -> ChaosConfig:
        """The full or CI size; on a cluster, every NATS server crashed in turn — the events stream's leader
        every other time (3 leader kills in the full run) — and each service's PostgreSQL server."""
        config = cls.ci() if ci else cls()
        if cluster:
            config = replace(config, cluster=True, nats_restarts=3 if ci else 6, pg_restarts=2 if ci else 4)
        return config

    def scheduled(self, now: datetime) -> ChaosConfig:
        """This run with the market's close inside the workload, `CLOSE_INTO_LOAD` of the way in if the
        system starts and is funded within half a minute (`run_chaos` waits for the rest): DAY orders placed
        before it expire while the faults go on."""
        if self.market_close:
            return self
        return replace(self, market_close=closes_in(30 + CLOSE_INTO_LOAD * self.duration, now))

    def system_env(self) -> dict[str, str]:
        """What the system under test must be started with for this workload."""
        env = {
            "OMS_WITHDRAWAL_APPROVAL_THRESHOLD": str(self.withdrawal_threshold),
            "OMS_EXECUTION": self.execution.value,
            "OMS_MARKET_ORDER_COLLAR": str(self.collar),
        }
        return env | ({"OMS_MARKET_CLOSE": self.market_close} if self.market_close else {})

    @property
    def close(self) -> MarketClose:
        return MarketClose.parse(self.market_close) if self.market_close else Settings().close()

    @property
    def min_gap(self) -> float:
        """Seconds before the same process is killed again: the supervisor doubles its restart delay for a
        child that crashed within the last minute, and a child that is never up cannot be killed."""
        return min(20.0, 3.5 * self.duration / max(1, self.kills + self.nats_restarts + self.pg_restarts))


async def _until_the_close_is_inside(config: ChaosConfig) -> None:
    """Wait (at most two minutes) until the market's close would fall `CLOSE_INTO_LOAD` of the way into a
    workload starting now; a close already too near (a slow start) is taken as it comes."""
    now = datetime.now(UTC)
    wait = (config.close.next(now) - now).total_seconds() - CLOSE_INTO_LOAD * config.duration
    if 0 < wait < 120:
        await asyncio.sleep(wait)


def _operations(book: Ledger) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for kind, ops in (
        ("orders", book.orders),
        ("cancels", book.cancels),
        ("cancels of resting orders at the end", book.sweeps),
        ("deposits", book.deposits),
        ("withdrawals", book.withdrawals),
        ("deposit requests", book.deposit_requests),
        ("decisions", book.decisions),
        ("own approvals (four eyes)", book.four_eyes),
    ):
        counts = {"sent": len(ops)}
        for op in ops:
            counts[op.outcome] = counts.get(op.outcome, 0) + 1
        table[kind] = counts
    return table


async def run_chaos(config: ChaosConfig, target: Target, console: Console) -> dict[str, Any]:
    """Run the workload with faults against `target` (a system started for it); returns the report."""
    rng = random.Random(config.seed)  # noqa: S311 - faults and load, not secrets
    client = Client(target, connections=config.in_flight + 16, timeout=10)
    faults = FaultLog()
    injector = FaultInjector(target, rng, faults)
    metrics = ConsumerMetrics(target)
    stop_metrics = asyncio.Event()
    report: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "config": asdict(config)}
    stop_quotes = asyncio.Event()
    tap = QuoteTap()
    try:
        assert target.nats
        # before the first order: every execution's quote is recorded
        await record_quotes(target.nats, replicas=3 if config.cluster else 1)
        await tap.start(target.nats)
        admin = await client.admin()
        market = MarketWatch(client, admin)
        symbols = await market.choose(config.symbols, rng, Decimal(20), Decimal(200))
        watching = asyncio.create_task(market.run(stop_quotes))
        requesters = await client.register_customers(min(config.requesters, config.customers), admin, "chaos")
        others = [str(uuid.uuid4()) for _ in range(config.customers - len(requesters))]
        cast = Cast(
            admin,
            await client.register_admin(admin, "chaos-admin"),
            [r.id for r in requesters] + others,
            requesters,
        )
        workload = Workload(client, cast, rng, config.withdrawal_threshold, market)
        console.print(f"trading {', '.join(symbols)}; funding {config.customers} customers …")
        await workload.fund()
        await _until_the_close_is_inside(config)
        scraper = asyncio.create_task(metrics.run(stop_metrics))
        plan = schedule(config.kills, config.nats_restarts, config.pg_restarts, rng)
        started, report["load_started"] = time.monotonic(), datetime.now(UTC).isoformat()
        load_start = time.time()
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
        ) as bar:
            task = bar.add_task("chaos", total=None)

            def tick(book: Ledger) -> None:
                accepted = sum(op.accepted for op in book.orders)
                bar.update(
                    task,
                    description=(
                        f"{len(book.orders)} orders ({accepted} accepted), {len(book.cancels)} cancels, "
                        f"{len(book.deposits)} deposits, {len(book.withdrawals)} withdrawals, "
                        f"{len(book.decisions)} decisions; "
                        f"{faults.total_kills} kills, {faults.nats_restarts} NATS and "
                        f"{faults.pg_restarts} PostgreSQL restarts, {len(faults.duplicates)} duplicates; "
                        f"{book.retries} retries"
                    ),
                )

            await asyncio.gather(
                workload.run(config.orders, config.duration, config.in_flight, on_tick=tick),
                injector.run(plan, config.duration, config.min_gap),
                duplicate_events(target, faults, config.duplicates, config.duration, rng),
            )
            tick(workload.book)
        load_seconds = time.monotonic() - started
        load_end = workload.finished_at or time.time()  # the workload's end: the faults may go on a little
        console.print("faults stopped; waiting for every restart, cancelling what rests, then quiescence …")
        await injector.settle()
        stop_quotes.set()
        await watching
        swept = await sweep_resting(target, workload, config.drain_timeout)
        drain, state = await wait_quiet(target, config.drain_timeout)
        stop_metrics.set()
        await scraper
        assert target.nats
        consumers = await consumer_stats(target.nats)
        console.print("verifying …")
        await tap.stop()
        quotes = await recorded_quotes(target.nats, heard=tap.quotes())
        rules = Rules(config.execution, config.close, quotes)
        verdict = await verify(target, workload.book, faults, rules)
        verdict.figures["resting_orders_swept"] = swept
        verdict.figures["market"] |= {
            "symbols": symbols,
            "close": config.market_close or "default",
            "quote_refreshes": market.refreshes,
            "quote_refreshes_failed": market.failures,  # the market service down
        }
        if drain is None:
            verdict.violations.insert(
                0, f"the system did not go quiet within {config.drain_timeout:.0f}s: {state}"
            )
    finally:
        stop_metrics.set()
        stop_quotes.set()
        await tap.stop()
        await client.close()
    report.update(
        {
            "finished": datetime.now(UTC).isoformat(),
            "load_seconds": round(load_seconds, 1),
            "drain_seconds": None if drain is None else round(drain, 1),
            "operations": _operations(workload.book),
            "retries": workload.book.retries,
            "http_errors": dict(workload.book.http_errors),
            "availability": availability(workload.book, faults, load_start, load_end),
            "faults": {
                "kills": dict(faults.kills),
                "total_kills": faults.total_kills,
                "nats_restarts": faults.nats_restarts,
                "pg_restarts": faults.pg_restarts,
                "restart_seconds": faults.restart_seconds,
                "duplicates_published": len(faults.duplicates),
                "duplicate_publish_failures": faults.duplicate_failures,
                "service_kills_while_busy": faults.busy_kills,
                "servers": dict(faults.servers),
            },
            "delivery": {"consumers": consumers, "consumer_metrics": metrics.totals(), **verdict.figures},
            "violations": verdict.violations,
            "timeline": faults.timeline,
        }
    )
    return report
