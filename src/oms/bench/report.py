"""The bench's figures beside their limits and targets: console table, Markdown, JSON, optional plot."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from oms.bench.stats import ratio


@dataclass(frozen=True)
class Figure:
    """One measured figure, the physical limit measured in the same run, and the target."""

    name: str
    measured: float | None
    unit: str
    limit: float | None = None
    limit_name: str = ""
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        return ratio(self.measured, self.limit)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "measured": self.measured,
            "unit": self.unit,
            "limit": self.limit,
            "limit_name": self.limit_name,
            "ratio": None if self.ratio is None else round(self.ratio, 3),
            "target": self.target,
            "met": self.met,
        }


def _get(data: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _at_least(value: float | None, floor: float) -> bool | None:
    return None if value is None else value >= floor


def _at_most(value: float | None, ceiling: float) -> bool | None:
    return None if value is None or math.isnan(value) else value <= ceiling


def figures(results: dict[str, Any]) -> list[Figure]:
    """The figures of a bench run, beside the floors of SPEC §6 and the market targets of issue 12."""
    limits = results.get("limits", {})
    pg_orders = _get(limits, "postgres", "orders_per_s")
    js_limit = _get(limits, "jetstream", "acked_per_s")
    rows: list[Figure] = []
    for phase in results.get("phases", []):
        name = phase["phase"]
        steady = _get(phase, "orders", "terminal_per_s_steady")
        if phase["config"]["rate"] is None:
            rows.append(
                Figure(
                    f"end-to-end orders/s ({name})",
                    steady,
                    "orders/s",
                    pg_orders,
                    "pgbench, 4 commits per order",
                    "≥ 1,000",
                    _at_least(steady, 1000),
                )
            )
            rows.append(
                Figure(
                    f"database commits per order ({name}; one per step without sharing: 4)",
                    _get(phase, "orders", "commits_per_order"),
                    "",
                )
            )
        p99 = _get(phase, "latency", "create_to_matched", "p99_ms")
        target = "≤ 30 ms at 250/s" if phase["config"]["rate"] else ""
        met = _at_most(p99, 30) if phase["config"]["rate"] and phase["config"]["rate"] >= 250 else None
        rows.append(Figure(f"create→MATCHED p99 ({name})", p99, "ms", target=target, met=met))
        rows.append(
            Figure(
                f"create→MATCHED p50 ({name})", _get(phase, "latency", "create_to_matched", "p50_ms"), "ms"
            )
        )
        rows.append(
            Figure(f"HTTP create-order p99 ({name})", _get(phase, "http", "create_order", "p99_ms"), "ms")
        )
        rows.append(
            Figure(f"HTTP list-orders p99 ({name})", _get(phase, "http", "list_orders", "p99_ms"), "ms")
        )
        events_per_s = steady * phase["relay"]["events_per_order"] if steady else None
        rows.append(
            Figure(
                f"events/s through JetStream ({name})",
                events_per_s and round(events_per_s, 1),
                "events/s",
                js_limit,
                "JetStream acked publishes/s",
            )
        )
        rows.append(
            Figure(
                f"event occurred→stored p99 ({name})",
                _get(phase, "relay", "occurred_to_stored", "p99_ms"),
                "ms",
            )
        )
    relay = limits.get("relay", {})
    drain = _get(relay, "drain", "events_per_s")
    rows.append(
        Figure(
            "relay events/s (backlog drain)",
            drain,
            "events/s",
            js_limit,
            "JetStream acked publishes/s",
            "≥ 25,000",
            _at_least(drain, 25_000),
        )
    )
    for step in relay.get("steady", []):
        p99 = _get(step, "commit_to_stored", "p99_ms")
        offered = step.get("offered_events_per_s") or 0
        rows.append(
            Figure(
                f"relay commit→publish p99 at {offered:,.0f} events/s offered "
                f"({step.get('relayed_events_per_s', 0):,.0f}/s relayed)",
                p99,
                "ms",
                target="≤ 20 ms at 10,000/s",
                met=_at_most(p99, 20) if offered >= 10_000 * 0.95 else None,
            )
        )
    rows += _market_figures(results)
    listing = results.get("list_bench", {})
    for label in (
        "customer token, 1 client",
        "admin for any customer, 1 client",
        "admin for any customer, 8 clients",
    ):
        p99 = _get(listing, label, "p99_ms")
        if p99 is not None:
            rows.append(
                Figure(
                    f"list-orders p99, {listing.get('orders_stored')} orders ({label})",
                    p99,
                    "ms",
                    target="≤ 20 ms",
                    met=_at_most(p99, 20),
                )
            )
    memory = _get(results, "at_rest", "total_pss_mb")
    rows.append(
        Figure(
            "memory at rest, whole system (PSS sum)",
            memory,
            "MB",
            target="≤ 1,024 MB",
            met=_at_most(memory, 1024),
        )
    )
    rows.append(
        Figure("memory at rest, whole system (RSS sum)", _get(results, "at_rest", "total_rss_mb"), "MB")
    )
    rows.append(Figure("PostgreSQL limit: orders/s (pgbench, 4 commits each)", pg_orders, "orders/s"))
    rows.append(Figure("JetStream limit: acked publishes/s", js_limit, "msg/s"))
    return rows


def _market_figures(results: dict[str, Any]) -> list[Figure]:
    """The resting phase (quote→execution, create→MATCHED beside resting orders) and the absorb phase."""
    rows: list[Figure] = []
    resting = results.get("resting", {})
    if "crossed" in resting:
        config = resting["config"]
        where = (
            f"{config['resting']:,} resting on {config['symbol']}, {config['quotes_per_second']:g} quotes/s"
        )
        q2e = resting["crossed"]["quote_to_execution"]
        rows.append(Figure(f"quote→execution p50 ({where})", q2e.get("p50_ms"), "ms"))
        rows.append(
            Figure(
                f"quote→execution p99 ({where})",
                q2e.get("p99_ms"),
                "ms",
                target="≤ 20 ms",
                met=_at_most(q2e.get("p99_ms"), 20),
            )
        )
        stored = resting["crossed"].get("quote_to_matched_event_stored", {})
        if stored.get("count"):
            rows.append(
                Figure(
                    f"quote→order.matched stored p99 ({where}; includes the commit and the relay)",
                    stored.get("p99_ms"),
                    "ms",
                )
            )
        wrong = sum(
            resting["crossed"][k]
            for k in ("not_executed", "executed_at_another_price", "uncrossed_not_resting")
        )
        rows.append(
            Figure(
                "resting orders executed otherwise than at their crossing quote",
                wrong,
                "",
                target="0",
                met=not wrong,
            )
        )
        for name, flow in resting["marketable"].items():
            latency = flow["create_to_matched"]
            for p in ("p50", "p99"):
                label = (
                    f"marketable create→MATCHED {p} at {config['rate']:g}/s ({name} on {config['symbol']})"
                )
                rows.append(Figure(label, latency.get(f"{p}_ms"), "ms"))
    absorb = results.get("absorb", {})
    if "steps" in absorb:
        lag = absorb["config"]["max_lag_ms"]
        rows.append(
            Figure(
                f"quotes/s the order service absorbs (probe quote→execution p99 ≤ {lag:g} ms)",
                absorb["absorbed_quotes_per_s"],
                "quotes/s",
            )
        )
    return rows


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"


def _met(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: ""}[met]


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| figure | measured | limit (same run) | ratio | target | met |",
        "| --- | ---: | --- | ---: | --- | --- |",
    ]
    for f in figures(results):
        limit = f"{_fmt(f.limit)} ({f.limit_name})" if f.limit is not None else ""
        share = f"{f.ratio:.0%}" if f.ratio is not None else ""
        lines.append(
            f"| {f.name} | {_fmt(f.measured)} {f.unit} | {limit} | {share} | {f.target} | {_met(f.met)} |"
        )
    return "\n".join(lines) + "\n"


def print_table(results: dict[str, Any], console: Console) -> None:
    table = Table("figure", "measured", "limit (same run)", "ratio", "target", "met", title="oms bench")
    for f in figures(results):
        limit = f"{_fmt(f.limit)} ({f.limit_name})" if f.limit is not None else ""
        share = f"{f.ratio:.0%}" if f.ratio is not None else ""
        met = {True: "[green]yes", False: "[red]no", None: ""}[f.met]
        table.add_row(f.name, f"{_fmt(f.measured)} {f.unit}", limit, share, f.target, met)
    console.print(table)
    for phase in results.get("phases", []):
        processes = Table(
            "process",
            "CPU % of a core",
            "peak RSS MB",
            "processes",
            title=f"processes during {phase['phase']}",
        )
        for role, figures_ in phase.get("processes", {}).items():
            processes.add_row(
                role, str(figures_["cpu_pct"]), str(figures_["rss_mb_max"]), str(figures_["processes"])
            )
        console.print(processes)


def save(results: dict[str, Any], directory: Path, stamp: str) -> tuple[Path, Path]:
    """`<stamp>.json` (everything) and `<stamp>.md` (the table) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    results["figures"] = [f.as_dict() for f in figures(results)]
    json_path = directory / f"{stamp}.json"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path = directory / f"{stamp}.md"
    md_path.write_text(markdown(results))
    return json_path, md_path


def plot(results: dict[str, Any], path: Path) -> Path:
    """A PNG per phase: orders sent and finished per second, and p50/p99 create→MATCHED over time."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install 'oms[plot]'") from exc
    phases = results.get("phases", [])
    fig, axes = plt.subplots(2, max(1, len(phases)), figsize=(7 * max(1, len(phases)), 7), squeeze=False)
    for column, phase in enumerate(phases):
        line = phase["timeline"]
        seconds = list(range(len(line["sent"])))
        top, bottom = axes[0][column], axes[1][column]
        top.plot(seconds, line["sent"], label="accepted")
        top.plot(seconds, line["finished"], label="MATCHED or CANCELED")
        top.set_title(phase["phase"])
        top.set_ylabel("orders/s")
        top.legend()
        bottom.plot(seconds, line["p50_ms"], label="p50")
        bottom.plot(seconds, line["p99_ms"], label="p99")
        bottom.set_xlabel("second of the run")
        bottom.set_ylabel("create→MATCHED ms")
        bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
