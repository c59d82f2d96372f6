"""`oms bench --cluster`: the same bench, one run after the other on the same machine, against a single node
(`oms up`) and a cluster (`oms up --cluster`: 3 NATS servers with R3 streams, a PostgreSQL server per
service, two replicas of each service and relay); then the two side by side (`compare.py`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from oms.bench import compare, projection, report
from oms.bench.cli import run_loop
from oms.bench.run import BenchOptions, run_bench
from oms.bench.system import LaunchedSystem

SYSTEMS = (("single_node", False), ("cluster", True))


@dataclass(frozen=True)
class Sizes:
    """The defaults that differ between one bench and a pair: two systems (a cluster takes a minute to
    start) on the same machine must fit in a quarter of an hour, so the pair leaves out the phases that
    compare nothing between them (the resting book, the quote absorb ladder, the million-order list)."""

    duration: float
    resting: int
    absorb_seconds: float
    list_orders: int
    rates: tuple[float, ...]
    concurrency: int | None


ONE = Sizes(
    duration=30.0, resting=10_000, absorb_seconds=10.0, list_orders=1_000_000, rates=(), concurrency=None
)
PAIR = Sizes(duration=20.0, resting=0, absorb_seconds=0.0, list_orders=0, rates=(250.0,), concurrency=32)


def run_pair(options: BenchOptions, console: Console, work_dir: Path, stamp: str) -> dict[str, Any]:
    """Start each system in turn in its own folder under `work_dir`, bench it, stop it; each system's own
    report is written as soon as it is done (`<stamp>-single-node`, `<stamp>-cluster`)."""
    results: dict[str, Any] = {}
    for name, cluster in SYSTEMS:
        folder = work_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        console.rule(f"{name.replace('_', ' ')}: oms up{' --cluster' if cluster else ''}")
        launched = LaunchedSystem(
            folder / "data",
            execution=options.execution,
            extra_env=options.system_env(folder),
            cluster=cluster,
        )
        started = time.monotonic()
        target = launched.start()
        console.print(f"ready in {time.monotonic() - started:.0f} s")
        try:
            one = run_loop(run_bench(options, target, console, folder, launched=True))
        finally:
            launched.stop()
        one["system"] = f"started by the bench: oms up{' --cluster' if cluster else ''}"
        one["start_s"] = round(time.monotonic() - started, 1)
        results[name] = one
        json_path, _ = report.save(one, options.output_dir, f"{stamp}-{name.replace('_', '-')}")
        console.print(f"{name.replace('_', ' ')}: {json_path}")
    return results


def finish_pair(results: dict[str, Any], options: BenchOptions, console: Console, stamp: str) -> None:
    """Print the side-by-side table and write `<stamp>-pair.json` / `.md`."""
    compare.print_table(results["single_node"], results["cluster"], console)
    directory = options.output_dir
    combined = summary(results)
    json_path = directory / f"{stamp}-pair.json"
    json_path.write_text(json.dumps(combined, indent=2, default=str) + "\n")
    md_path = directory / f"{stamp}-pair.md"
    md_path.write_text(pair_markdown(combined))
    console.print(f"results: {json_path}, {md_path}")


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """Both systems' results with the comparison, the CPU per order tables and the projection."""
    single, cluster = results["single_node"], results["cluster"]
    return {
        **results,
        "comparison": [row.as_dict() for row in compare.rows(single, cluster)],
        "cpu_ms_per_order": {
            "single_node": compare.cpu_tables(single),
            "cluster": compare.cpu_tables(cluster),
        },
        "projection": projection.projection(single, cluster),
    }


def pair_markdown(combined: dict[str, Any]) -> str:
    single, cluster = combined["single_node"], combined["cluster"]
    return (
        "## Single node vs cluster\n\n"
        + compare.markdown(single, cluster)
        + "\n## CPU milliseconds per order, by component\n\n"
        + compare.cpu_markdown(single, cluster)
        + "\n## Orders/s against machines: a projection, not a measurement\n\n"
        + projection.markdown(combined["projection"])
        + "\n## Single node\n\n"
        + report.markdown(single)
        + "\n## Cluster\n\n"
        + report.markdown(cluster)
    )
