"""`oms bench --cluster`: a single node and a cluster, benched one after the other by the same bench on the
same machine, side by side — throughput, latency, CPU per order by component and what replication costs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

NOT_THE_SYSTEM = ("bench client", "whole machine", "others (not the system)")
SYSTEM_TOTAL = "system (sum)"


@dataclass(frozen=True)
class Row:
    """One figure of both systems."""

    name: str
    single: float | None
    cluster: float | None
    unit: str = ""

    @property
    def ratio(self) -> float | None:
        """cluster / single node."""
        if self.single is None or self.cluster is None or not self.single:
            return None
        if math.isnan(self.single) or math.isnan(self.cluster):
            return None
        return self.cluster / self.single

    def as_dict(self) -> dict[str, Any]:
        ratio = self.ratio
        return {
            "name": self.name,
            "single_node": self.single,
            "cluster": self.cluster,
            "unit": self.unit,
            "cluster_over_single": None if ratio is None else round(ratio, 3),
        }


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def cpu_per_order(phase: dict[str, Any]) -> dict[str, float]:
    """CPU milliseconds per order by role during a load phase: the role's CPU (% of one core, summed over
    its processes — both replicas of a service in a cluster) over the orders accepted per second in the
    same window. Includes what the role spends whatever the load (quotes, polls), so it is lower at a
    higher rate; `marginal_cpu_per_order` leaves that out."""
    rate = _get(phase, "orders", "sent_per_s")
    processes = phase.get("processes") or {}
    if not rate or not processes:
        return {}
    ms = {role: round(10 * figures["cpu_pct"] / rate, 3) for role, figures in processes.items()}
    return _totals(ms)


def _totals(ms: dict[str, float]) -> dict[str, float]:
    """`ms` with the system's total, and — when PostgreSQL was counted by server (a cluster) — all servers
    as `postgres` too, beside a single node's one server (left out of the total: counted already)."""
    system = [v for role, v in ms.items() if role not in NOT_THE_SYSTEM]
    servers = [v for role, v in ms.items() if role.startswith("postgres-")]
    if servers and "postgres" not in ms:
        ms["postgres"] = round(sum(servers), 3)
    if system:
        ms[SYSTEM_TOTAL] = round(sum(system), 3)
    return ms


SATURATED = 0.9  # of every core: a machine this busy at the lower rate has no CPU left to rise with the load


def marginal_cpu_per_order(low: dict[str, Any], high: dict[str, Any], cores: int) -> dict[str, float]:
    """CPU milliseconds each further order costs by role, between two phases of different rates: the rise in
    CPU over the rise in orders/s (what grows with the load, without what is spent whatever it is). None
    when the rates are too close or the machine was already saturated at the lower one (the roles then
    only share the same cores out differently)."""
    low_rate, high_rate = _get(low, "orders", "sent_per_s"), _get(high, "orders", "sent_per_s")
    if not low_rate or not high_rate or high_rate - low_rate < 0.2 * low_rate:
        return {}
    busy = _get(low, "processes", "whole machine", "cpu_pct")
    if busy is None or busy >= SATURATED * 100 * cores:
        return {}
    rise = high_rate - low_rate
    low_cpu, high_cpu = low.get("processes") or {}, high.get("processes") or {}
    ms = {}
    for role in sorted(set(low_cpu) & set(high_cpu)):
        if role in ("whole machine", "others (not the system)"):
            continue
        ms[role] = round(10 * (high_cpu[role]["cpu_pct"] - low_cpu[role]["cpu_pct"]) / rise, 3)
    return _totals(ms)


def closed_loop(results: dict[str, Any]) -> dict[str, Any] | None:
    return next((p for p in results.get("phases", []) if p["config"]["rate"] is None), None)


def fixed_rates(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in results.get("phases", []) if p["config"]["rate"] is not None]


def cpu_tables(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """CPU ms per order by role for each phase, and marginal between the slowest fixed rate and the
    closed loop."""
    tables = {p["phase"]: cpu_per_order(p) for p in results.get("phases", [])}
    loop, rates = closed_loop(results), fixed_rates(results)
    if loop is not None and rates:
        cores = _get(results, "machine", "nproc") or 1
        marginal = marginal_cpu_per_order(rates[0], loop, cores)
        if marginal:
            tables[f"marginal, {rates[0]['phase']} → {loop['phase']}"] = marginal
    return tables


def rows(single: dict[str, Any], cluster: dict[str, Any]) -> list[Row]:
    """The side-by-side figures, phases matched by name."""
    found: list[Row] = []
    cluster_phases = {p["phase"]: p for p in cluster.get("phases", [])}
    for phase in single.get("phases", []):
        found += _phase_rows(phase, cluster_phases.get(phase["phase"], {}))
    found += _replication_rows(single, cluster)
    found.append(
        Row(
            "pgbench orders/s (4 commits each; one server)",
            *_both(single, cluster, "postgres", "orders_per_s"),
            "orders/s",
        )
    )
    found.append(
        Row(
            "memory at rest, PSS sum",
            _get(single, "at_rest", "total_pss_mb"),
            _get(cluster, "at_rest", "total_pss_mb"),
            "MB",
        )
    )
    return found


def _phase_rows(phase: dict[str, Any], other: dict[str, Any]) -> list[Row]:
    name = phase["phase"]

    def both(label: str, unit: str, *path: str) -> Row:
        return Row(f"{label} ({name})", _get(phase, *path), _get(other, *path), unit)

    found = [both("orders/s finished, steady", "orders/s", "orders", "terminal_per_s_steady")]
    for p in ("p50", "p99"):
        found.append(both(f"create→MATCHED {p}", "ms", "latency", "create_to_matched", f"{p}_ms"))
    found.append(both("HTTP create-order p99", "ms", "http", "create_order", "p99_ms"))
    found.append(both("event occurred→stored p99", "ms", "relay", "occurred_to_stored", "p99_ms"))
    found.append(both("whole machine CPU", "% of a core", "processes", "whole machine", "cpu_pct"))
    mine, theirs = cpu_per_order(phase), cpu_per_order(other)
    for role in sorted(set(mine) | set(theirs)):
        if role not in NOT_THE_SYSTEM[1:]:
            found.append(Row(f"CPU per order: {role} ({name})", mine.get(role), theirs.get(role), "ms"))
    return found


def _both(single: dict[str, Any], cluster: dict[str, Any], *path: str) -> tuple[Any, Any]:
    return _get(single, "limits", *path), _get(cluster, "limits", *path)


def _replication_rows(single: dict[str, Any], cluster: dict[str, Any]) -> list[Row]:
    """What replication costs: the broker's acked publishes and one publish's round trip with the system's
    own stream replicas (single: R1, cluster: R3), and the same cluster with R1; the relay with each."""
    replicas = _get(cluster, "limits", "jetstream", "replicas") or 1
    label = f"R1 vs R{replicas}"
    found = [
        Row(
            f"JetStream acked publishes/s, {label}",
            *_both(single, cluster, "jetstream", "acked_per_s"),
            "msg/s",
        ),
        Row(
            f"JetStream publish→ack p50, {label}",
            *_both(single, cluster, "jetstream", "ack_round_trip", "p50_ms"),
            "ms",
        ),
        Row(
            f"JetStream publish→ack p99, {label}",
            *_both(single, cluster, "jetstream", "ack_round_trip", "p99_ms"),
            "ms",
        ),
    ]
    if _get(cluster, "limits", "jetstream_r1") is not None:
        r1 = _get(cluster, "limits", "jetstream_r1")
        r3 = _get(cluster, "limits", "jetstream")
        name = f"the cluster's broker, R1 vs R{replicas}"
        found += [
            Row(
                f"JetStream acked publishes/s ({name})",
                _get(r1, "acked_per_s"),
                _get(r3, "acked_per_s"),
                "msg/s",
            ),
            Row(
                f"JetStream publish→ack p50 ({name})",
                _get(r1, "ack_round_trip", "p50_ms"),
                _get(r3, "ack_round_trip", "p50_ms"),
                "ms",
            ),
            Row(
                f"JetStream publish→ack p99 ({name})",
                _get(r1, "ack_round_trip", "p99_ms"),
                _get(r3, "ack_round_trip", "p99_ms"),
                "ms",
            ),
        ]
    found.append(
        Row(
            f"relay events/s, backlog drain, {label}",
            *_both(single, cluster, "relay", "drain", "events_per_s"),
            "events/s",
        )
    )
    steady_single = _get(single, "limits", "relay", "steady") or [{}]
    steady_cluster = _get(cluster, "limits", "relay", "steady") or [{}]
    found.append(
        Row(
            f"relay commit→stored p99 at the first offered rate, {label}",
            _get(steady_single[0], "commit_to_stored", "p99_ms"),
            _get(steady_cluster[0], "commit_to_stored", "p99_ms"),
            "ms",
        )
    )
    return found


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"


def _cell(value: float | None, unit: str) -> str:
    shown = _fmt(value)
    return f"{shown} {unit}" if unit and shown != "–" else shown


def _ratio(row: Row) -> str:
    return "" if row.ratio is None else f"×{row.ratio:.2f}"


def markdown(single: dict[str, Any], cluster: dict[str, Any]) -> str:
    lines = [
        "| figure | single node | cluster | cluster / single |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in rows(single, cluster):
        lines.append(
            f"| {row.name} | {_cell(row.single, row.unit)} | {_cell(row.cluster, row.unit)} | {_ratio(row)} |"
        )
    return "\n".join(lines) + "\n"


def cpu_markdown(single: dict[str, Any], cluster: dict[str, Any]) -> str:
    """CPU ms per order by component: each phase and the marginal cost, for both systems."""
    columns = [(f"single: {k}", v) for k, v in cpu_tables(single).items()]
    columns += [(f"cluster: {k}", v) for k, v in cpu_tables(cluster).items()]
    roles = sorted({role for _, table in columns for role in table}, key=lambda r: (r == SYSTEM_TOTAL, r))
    lines = [
        "| CPU ms per order | " + " | ".join(name for name, _ in columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for role in roles:
        if role in NOT_THE_SYSTEM[1:]:
            continue
        lines.append(f"| {role} | " + " | ".join(_fmt(table.get(role)) for _, table in columns) + " |")
    return "\n".join(lines) + "\n"


def print_table(single: dict[str, Any], cluster: dict[str, Any], console: Console) -> None:
    table = Table("figure", "single node", "cluster", "cluster / single", title="single node vs cluster")
    for row in rows(single, cluster):
        table.add_row(row.name, _cell(row.single, row.unit), _cell(row.cluster, row.unit), _ratio(row))
    console.print(table)
