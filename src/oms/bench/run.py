"""`oms bench`: the whole run — set-up, load phases, the machine's limits, the list benchmark, the report."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from oms.bench import jetstream, pgbench, relaybench, report
from oms.bench.client import Client
from oms.bench.listbench import list_bench
from oms.bench.load import LoadConfig, fund_customers
from oms.bench.observe import Observer
from oms.bench.phase import run_phase
from oms.bench.processes import ProcessSampler, memory_at_rest
from oms.bench.system import Target


@dataclass
class BenchOptions:
    customers: int = 50
    duration: float = 30.0
    rates: list[float] = field(default_factory=list)
    concurrency: int | None = None
    list_rate: float = 5.0
    reject_ratio: float = 0.0
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
        configs = [
            LoadConfig(self.duration, rate=r, list_rate=self.list_rate, reject_ratio=self.reject_ratio)
            for r in self.rates
        ]
        if self.concurrency or not configs:
            configs.append(
                LoadConfig(
                    self.duration,
                    concurrency=self.concurrency or 32,
                    list_rate=self.list_rate,
                    reject_ratio=self.reject_ratio,
                )
            )
        return configs


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
    sampler = ProcessSampler(target.processes)
    stop_sampling = asyncio.Event()
    try:
        admin = await client.admin()
        console.print(f"registering and funding {options.customers} customers …")
        customers = await client.register_customers(options.customers, admin)
        await fund_customers(client, admin, customers)
        if observer is not None:
            await observer.open()
            await observer.wait_quiet(30)
        background = [asyncio.create_task(sampler.run(stop_sampling))]
        if observer is not None:
            background.append(asyncio.create_task(observer.sample_lag(stop_sampling)))
        results["phases"] = []
        for config in options.phases():
            phase = await run_phase(
                config,
                target=target,
                client=client,
                admin=admin,
                customers=customers,
                observer=observer,
                sampler=sampler,
                console=console,
                drain_timeout=options.drain_timeout,
            )
            results["phases"].append(phase)
            _print_phase(phase, console)
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
        await client.close()
        if observer is not None:
            await observer.close()
    results["finished"] = datetime.now(UTC).isoformat()
    results["load_average_at_end"] = os.getloadavg()
    return results


async def _limits(options: BenchOptions, target: Target, console: Console, work_dir: Path) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if target.has_database:
        console.print(
            f"PostgreSQL limit: pgbench, {options.pgbench_clients} clients, {options.pgbench_seconds:g}s …"
        )
        limits["postgres"] = await asyncio.to_thread(
            pgbench.commit_limit, target, clients=options.pgbench_clients, seconds=options.pgbench_seconds
        )
    if target.nats:
        console.print("JetStream limit: acked publishes …")
        limits["jetstream"] = await jetstream.publish_limit(target.nats)
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


def finish(results: dict[str, Any], options: BenchOptions, console: Console) -> None:
    """Print the table and write the JSON, Markdown and (with --plot) PNG files."""
    report.print_table(results, console)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path, md_path = report.save(results, options.output_dir, stamp)
    console.print(f"results: {json_path}, {md_path}")
    if options.plot:
        console.print(f"plot: {report.plot(results, options.output_dir / f'{stamp}.png')}")
