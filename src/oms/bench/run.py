"""`oms bench`: the whole run — set-up, load phases, the machine's limits, the list benchmark, the report."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from oms.bench import jetstream, pgbench, relaybench, report
from oms.bench.absorb import AbsorbConfig, run_absorb
from oms.bench.client import Client, Principal
from oms.bench.listbench import list_bench
from oms.bench.load import LoadConfig, Workload, fund_customers
from oms.bench.market import Market, write_opening_replay
from oms.bench.observe import Observer
from oms.bench.phase import run_phase
from oms.bench.processes import ProcessSampler, memory_at_rest
from oms.bench.quotes import QuotePublisher
from oms.bench.resting import RestingConfig, run_resting
from oms.bench.system import Target

MARKET_WAIT = 30.0  # seconds for the market service to have a quote of every open symbol


@dataclass
class BenchOptions:
    customers: int = 50
    duration: float = 30.0
    rates: list[float] = field(default_factory=list)
    concurrency: int | None = None
    list_rate: float = 5.0
    reject_ratio: float = 0.0
    market_ratio: float = 0.1
    execution: str = "market"
    symbols: int = 20
    quotes_per_second: float = 0.2  # per symbol, while the bench is the quote source
    resting: int = 10_000  # 0: no resting phase
    resting_quotes_per_second: float = 100.0
    resting_rate: float = 100.0
    resting_duration: float | None = None  # None: `duration`
    absorb_rates: list[float] = field(default_factory=lambda: list(AbsorbConfig.rates))
    absorb_seconds: float = 10.0  # 0: no absorb phase
    drain_timeout: float = 180.0
    limits: bool = True
    pgbench_clients: int = 16
    pgbench_seconds: float = 10.0
    relay_rate: int = 10_000
    relay_events_per_tx: int = 1
    relay_backlog: int = 100_000
    list_orders: int = 0  # 0: no list benchmark
    list_customers: int = 10_000
    output_dir: Path = Path("bench-results")
    plot: bool = False
    env: dict[str, str] = field(default_factory=dict)  # for processes the bench starts itself

    def phases(self) -> list[LoadConfig]:
        """The load phases: each --rate, then the closed loop (the default phase); none with duration 0."""
        if self.duration <= 0:
            return []
        mix = partial(
            LoadConfig,
            self.duration,
            list_rate=self.list_rate,
            reject_ratio=self.reject_ratio,
            market_ratio=self.market_ratio,
        )
        configs = [mix(rate=r) for r in self.rates]
        if self.concurrency or not configs:
            configs.append(mix(concurrency=self.concurrency or 32))
        return configs

    def resting_config(self) -> RestingConfig:
        return RestingConfig(
            resting=self.resting,
            quotes_per_second=self.resting_quotes_per_second,
            rate=self.resting_rate,
            duration=self.resting_duration or self.duration,
            market_ratio=self.market_ratio,
        )

    def system_env(self, work_dir: Path) -> dict[str, str]:
        """The environment of the system the bench starts: the execution mode, and — unless told another
        source — the bench as its quote source (the feed replays one opening quote per symbol, then only
        the bench publishes quotes)."""
        env = {"OMS_EXECUTION": self.execution}
        if "OMS_MARKET_SOURCE" not in self.env:
            replay = write_opening_replay(work_dir / "opening-quotes.csv")
            env |= {
                "OMS_MARKET_SOURCE": "replay",
                "OMS_MARKET_REPLAY_FILE": str(replay),
                "OMS_MARKET_REPLAY_SPEED": "0",
            }
        return env | self.env

    def quotes_by_bench(self, launched: bool) -> bool:
        return launched and "OMS_MARKET_SOURCE" not in self.env


def machine() -> dict[str, Any]:
    """nproc, memory, CPU model, kernel, Python: where the figures were taken."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "free_h": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }


async def run_bench(
    options: BenchOptions, target: Target, console: Console, work_dir: Path, *, launched: bool
) -> dict[str, Any]:
    """Run everything against `target`; returns the results (also written to `options.output_dir`)."""
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "started": started.isoformat(),
        "machine": machine(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        "system": "started by the bench" if launched else "already running",
    }
    if target.root_pid is not None:
        await asyncio.sleep(3)  # let the services finish their start before measuring them at rest
        results["at_rest"] = memory_at_rest(target.processes())
        console.print(
            f"memory at rest: {results['at_rest']['total_pss_mb']} MB PSS, "
            f"{results['at_rest']['total_rss_mb']} MB RSS (sum over {len(target.processes())} processes)"
        )
    client = Client(target, connections=max(64, (options.concurrency or 0) + 16))
    observer = Observer(target) if target.has_database else None
    sampler = ProcessSampler(target.processes, servers={port: s for s, port in target.pg_ports.items()})
    stop_sampling, stop_quotes = asyncio.Event(), asyncio.Event()
    publisher: QuotePublisher | None = None
    try:
        admin = await client.admin()
        market = await _market(client, admin)
        workload = Workload.of(market, options.symbols)
        probe = market.pick(1, leave_out={*workload.symbols, workload.unheld or ""})
        resting_symbol = workload.symbols[0]
        quiet = {resting_symbol, *probe}  # quoted only by the resting and absorb phases
        results["market"] = {
            "execution": options.execution,
            "symbols_listed": len(market.instruments),
            "workload_symbols": workload.symbols,
            "unheld_symbol": workload.unheld,
            "quotes": "published by the bench as the market feed"
            if options.quotes_by_bench(launched)
            else "the system's own feed",
        }
        if options.quotes_by_bench(launched):
            if target.market_feed is None:
                raise RuntimeError("the bench's system has no market feed identity to publish quotes with")
            publisher = await QuotePublisher.connect(target.market_feed, market)
        console.print(f"registering and funding {options.customers} customers …")
        customers = await client.register_customers(options.customers, admin)
        await fund_customers(client, admin, customers, workload.symbols)
        if observer is not None:
            await observer.open()
            await observer.wait_quiet(30)
        background = [asyncio.create_task(sampler.run(stop_sampling))]
        if observer is not None:
            background.append(asyncio.create_task(observer.sample_lag(stop_sampling)))
        quoting = None
        if publisher is not None:
            others = [s for s in market.tradable() if s not in quiet]
            results["market"]["background_quotes_per_s"] = round(options.quotes_per_second * len(others), 1)
            quoting = asyncio.create_task(
                publisher.background(others, lambda: options.quotes_per_second * len(others), stop_quotes)
            )
        results["phases"] = []
        for config in options.phases():
            phase = await run_phase(
                config,
                target=target,
                client=client,
                admin=admin,
                customers=customers,
                workload=workload,
                observer=observer,
                sampler=sampler,
                console=console,
                drain_timeout=options.drain_timeout,
            )
            results["phases"].append(phase)
            _print_phase(phase, console)
        why_not = _market_phases_refused(options, publisher, observer)
        if options.resting and options.duration > 0:
            if why_not or publisher is None or observer is None:
                results["resting"] = {"skipped": why_not}
            else:
                results["resting"] = await run_resting(
                    options.resting_config(),
                    symbol=resting_symbol,
                    client=client,
                    admin=admin,
                    customers=customers,
                    workload=workload,
                    publisher=publisher,
                    observer=observer,
                    console=console,
                    events=target.nats,
                )
                _print_resting(results["resting"], console)
        stop_quotes.set()
        if quoting is not None:
            await quoting
        if options.absorb_seconds > 0 and options.absorb_rates:
            if why_not or publisher is None or observer is None or not probe:
                results["absorb"] = {"skipped": why_not or "no symbol left to probe"}
            else:
                results["absorb"] = await run_absorb(
                    AbsorbConfig(tuple(options.absorb_rates), options.absorb_seconds),
                    probe=probe[0],
                    symbols=[s for s in market.tradable() if s not in quiet],
                    client=client,
                    customers=customers,
                    publisher=publisher,
                    observer=observer,
                    sampler=sampler,
                    console=console,
                )
        stop_sampling.set()
        await asyncio.gather(*background)
        if options.limits:
            results["limits"] = await _limits(options, target, console, work_dir)
        if options.list_orders and launched and target.has_database:
            console.print(f"list benchmark: loading {options.list_orders:,} orders …")
            results["list_bench"] = await list_bench(
                target, client, admin, customers, orders=options.list_orders, customers=options.list_customers
            )
        elif options.list_orders:
            results["list_bench"] = {"skipped": "only on a system the bench started (it loads fake history)"}
    finally:
        stop_sampling.set()
        stop_quotes.set()
        await client.close()
        if publisher is not None:
            await publisher.close()
        if observer is not None:
            await observer.close()
    results["finished"] = datetime.now(UTC).isoformat()
    results["load_average_at_end"] = os.getloadavg()
    return results


async def _market(client: Client, admin: Principal) -> Market:
    """The listed instruments and their latest quotes, once every open one has a quote (or MARKET_WAIT
    has passed: the symbols without one are left out of the workload)."""
    deadline = time.monotonic() + MARKET_WAIT
    instruments = await client.instruments(admin)
    opened = {i["symbol"] for i in instruments if i["status"] == "OPEN"}
    while True:
        quotes = await client.quotes(admin)
        if opened <= {q["symbol"] for q in quotes} or time.monotonic() > deadline:
            return Market.parse(instruments, quotes)
        await asyncio.sleep(0.5)


def _market_phases_refused(
    options: BenchOptions, publisher: QuotePublisher | None, observer: Observer | None
) -> str | None:
    """Why the resting and absorb phases cannot run (None: they can)."""
    if options.execution != "market":
        return f"only in market mode (this run: {options.execution})"
    if publisher is None:
        return "only when the bench is the quote source (a system it started, OMS_MARKET_SOURCE not set)"
    if observer is None:
        return "only with the system's databases (to read when each order executed)"
    return None


async def _limits(options: BenchOptions, target: Target, console: Console, work_dir: Path) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if target.has_database:
        console.print(
            f"PostgreSQL limit: pgbench, {options.pgbench_clients} clients, {options.pgbench_seconds:g}s"
            + (" (on the order service's server)" if target.cluster else "")
            + " …"
        )
        limits["postgres"] = await asyncio.to_thread(
            pgbench.commit_limit, target, clients=options.pgbench_clients, seconds=options.pgbench_seconds
        )
    replicas = 1
    if target.nats:
        # The limit the system's events meet: a stream of as many replicas as theirs. With more than one
        # (a cluster), the same broker with one replica beside it isolates what replication costs.
        replicas = await jetstream.stream_replicas(target.nats)
        console.print(f"JetStream limit: acked publishes, R{replicas} …")
        limits["jetstream"] = await jetstream.publish_limit(target.nats, replicas=replicas)
        if replicas > 1:
            console.print("JetStream limit: acked publishes, R1 on the same servers …")
            limits["jetstream_r1"] = await jetstream.publish_limit(target.nats, replicas=1)
    if target.has_database and target.nats:
        rates = [options.relay_rate]
        broker = _get_limit(limits, "jetstream", "acked_per_s")
        if broker and broker / 2 < options.relay_rate:
            rates.append(int(broker / 2))  # a rate the broker can take: the relay's own latency
        console.print(f"relay: {', '.join(f'{r:,}' for r in rates)} events/s offered, then a backlog …")
        limits["relay"] = await relaybench.relay_bench(
            target,
            work_dir,
            rates=rates,
            per_tx=options.relay_events_per_tx,
            backlog=options.relay_backlog,
            env=options.env,
            replicas=replicas,
        )
    return limits


def _get_limit(limits: dict[str, Any], part: str, name: str) -> float | None:
    value = limits.get(part, {}).get(name)
    return float(value) if value else None


def _print_phase(phase: dict[str, Any], console: Console) -> None:
    orders, latency = phase["orders"], phase["latency"]["create_to_matched"]
    console.print(
        f"  {phase['phase']}: {orders['accepted']} accepted, {orders['matched']} MATCHED, "
        f"{orders['canceled']} CANCELED, {orders['still_pending']} PENDING; "
        f"{orders['terminal_per_s_steady']} orders/s steady; create→MATCHED p50 {latency.get('p50_ms')} ms, "
        f"p99 {latency.get('p99_ms')} ms; drained in {orders['drain_s']} s"
    )
    if orders.get("consumer_retries"):
        console.print(f"  {orders['consumer_retries']} deliveries retried by the consumers (see their logs)")


def _print_resting(resting: dict[str, Any], console: Console) -> None:
    crossed, flows = resting["crossed"], resting["marketable"]
    q2e = crossed["quote_to_execution"]
    console.print(
        f"  {resting['phase']}: {crossed['orders_crossed']} orders crossed by "
        f"{crossed['crossing_quotes']} quotes, "
        f"quote→execution p50 {q2e.get('p50_ms')} ms, p99 {q2e.get('p99_ms')} ms; "
        f"{crossed['not_executed']} not executed, {crossed['executed_at_another_price']} at another price, "
        f"{crossed['uncrossed_not_resting']} uncrossed that did not rest"
    )
    stored = crossed.get("quote_to_matched_event_stored") or {}
    if stored.get("count"):
        console.print(
            f"  quote → order.matched stored in JetStream (after the commit and the relay): "
            f"p50 {stored['p50_ms']} ms, p99 {stored['p99_ms']} ms"
        )
    inside = crossed.get("in_order_service") or {}
    if inside.get("crossing_quotes"):
        console.print(
            f"  in the order service (quote arrival→commit, its histogram): "
            f"p50 ≤ {inside['p50_ms_at_most']:g} ms, p99 ≤ {inside['p99_ms_at_most']:g} ms "
            f"over {inside['crossing_quotes']} crossing quotes"
        )
    for name, flow in flows.items():
        latency = flow["create_to_matched"]
        console.print(
            f"  marketable orders {name}: {flow['matched']}/{flow['accepted']} MATCHED, "
            f"create→MATCHED p50 {latency.get('p50_ms')} ms, p99 {latency.get('p99_ms')} ms"
        )


def finish(results: dict[str, Any], options: BenchOptions, console: Console) -> None:
    """Print the table and write the JSON, Markdown and (with --plot) PNG files."""
    report.print_table(results, console)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path, md_path = report.save(results, options.output_dir, stamp)
    console.print(f"results: {json_path}, {md_path}")
    if options.plot:
        console.print(f"plot: {report.plot(results, options.output_dir / f'{stamp}.png')}")
