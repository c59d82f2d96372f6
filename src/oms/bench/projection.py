"""A projection — arithmetic on measured figures, not a measurement — of orders/s against machines, from
`oms bench --cluster`: CPU per order by component and the limits of the parts that one more machine does
not multiply until they are partitioned.

The model, stated so that it can be checked:
- every machine is like the one measured (`nproc` cores) and is kept at `HEADROOM` of its CPU (the rest is
  what keeps p99 low: the bench's closed loop runs the machine flat out and its p99 shows it);
- stateless services (auth, order, account, market, back office replicas) spread over every machine, so the
  CPU bound is machines × cores × HEADROOM / (system CPU ms per order);
- unpartitioned, each of these is one process or one server, so its throughput is bounded whatever the
  number of machines: a service's PostgreSQL server (a machine of its own), a database's active relay (one
  Python process: one core), the events stream (one Raft leader: the acked publishes/s measured in the same
  run, over the events per order — on the one shared machine, so low);
- partitioned into `shards` (the order and account databases and their relays by customer, the events
  stream by subject; a shard per `MACHINES_PER_SHARD` machines), those bounds are multiplied by the shards.

Two costs per order, because the one machine measured cannot give the cost on many:
- "cluster": the cluster's own, measured on one machine — every replica and R3 included, but also 25 processes
  contending for 2 cores, and each replica's batches half as large (pessimistic);
- "single + R3": the single node's, with the cluster's NATS cost (replication is work on any layout) and its
  PostgreSQL shared out in the cluster's proportions between the servers (optimistic: batches as large as
  one process gets them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oms.bench.compare import SYSTEM_TOTAL, closed_loop, cpu_per_order
from oms.kernel.topology import RELAYED

HEADROOM = 0.7
MACHINES = (3, 6, 12, 24)
MACHINES_PER_SHARD = 3  # a shard's databases, relays and stream leader on its own 3 machines


@dataclass(frozen=True)
class Bound:
    """A part that does not spread over more machines, and the orders/s it allows."""

    part: str
    orders_per_s: float


def costs(single: dict[str, Any], cluster: dict[str, Any]) -> dict[str, dict[str, float]]:
    """CPU ms per order by role in each scenario ("cluster", "single + R3"); a scenario without figures is
    left out."""
    found: dict[str, dict[str, float]] = {}
    loop, alone = closed_loop(cluster), closed_loop(single)
    clustered = cpu_per_order(loop) if loop else {}
    if clustered:
        found["cluster"] = clustered
    base = cpu_per_order(alone) if alone else {}
    if base and clustered:
        mixed = {role: v for role, v in base.items() if role != SYSTEM_TOTAL}
        mixed["nats"] = clustered.get("nats", mixed.get("nats", 0.0))
        servers = {r: v for r, v in clustered.items() if r.startswith("postgres-")}
        if servers and sum(servers.values()) and "postgres" in base:
            share = base["postgres"] / sum(servers.values())
            mixed |= {role: round(v * share, 3) for role, v in servers.items()}
        system = [v for role, v in mixed.items() if _in_system(role, mixed)]
        mixed[SYSTEM_TOTAL] = round(sum(system), 3)
        found["single + R3"] = mixed
    return found


def _in_system(role: str, ms: dict[str, float]) -> bool:
    if role in ("bench client", "whole machine", "others (not the system)", SYSTEM_TOTAL):
        return False
    # PostgreSQL once: by server when split, else as one.
    return not (role == "postgres" and any(r.startswith("postgres-") for r in ms))


def bounds(ms: dict[str, float], cluster: dict[str, Any], headroom: float = HEADROOM) -> list[Bound]:
    """The bounds of the parts of the order's flow that do not spread (the order and account databases'
    servers and relays, the events stream), given CPU ms per order by role."""
    cores = int(cluster.get("machine", {}).get("nproc") or 1)
    found: list[Bound] = []
    flow = {f"{kind}-{service}" for kind in ("postgres", "relay") for service in RELAYED}
    for role, cost in sorted(ms.items()):
        if cost <= 0 or role not in flow:  # auth's and market's servers see no order
            continue
        if role.startswith("postgres-"):
            found.append(Bound(f"{role} (one server, a machine of its own)", cores * 1000 * headroom / cost))
        elif role.startswith("relay-"):
            found.append(Bound(f"{role} (one active process: one core)", 1000 * headroom / cost))
    loop = closed_loop(cluster) or {}
    acked = cluster.get("limits", {}).get("jetstream", {}).get("acked_per_s")
    per_order = loop.get("relay", {}).get("events_per_order")
    if acked and per_order:
        replicas = cluster["limits"]["jetstream"].get("replicas", 1)
        found.append(
            Bound(
                f"the events stream (one R{replicas} leader, measured on the one machine)", acked / per_order
            )
        )
    return found


def projection(
    single: dict[str, Any],
    cluster: dict[str, Any],
    machines: tuple[int, ...] = MACHINES,
    headroom: float = HEADROOM,
) -> dict[str, Any]:
    """Projected orders/s for each number of machines and each cost, unpartitioned and partitioned."""
    cores = int(cluster.get("machine", {}).get("nproc") or 1)
    scenarios = {}
    for name, ms in costs(single, cluster).items():
        total, limits = ms.get(SYSTEM_TOTAL, 0.0), bounds(ms, cluster, headroom)
        rows = []
        for n in machines:
            by_cpu = n * cores * 1000 * headroom / total if total else 0.0
            shards = max(1, n // MACHINES_PER_SHARD)
            tight = min(limits, key=lambda b: b.orders_per_s, default=None)
            bound_by = "CPU" if tight is None or by_cpu <= tight.orders_per_s else tight.part
            rows.append(
                {
                    "machines": n,
                    "by_cpu": _round(by_cpu),
                    "unpartitioned": _round(min([by_cpu, *(b.orders_per_s for b in limits)])),
                    "bound_by": bound_by,
                    "shards": shards,
                    "partitioned": _round(min([by_cpu, *(b.orders_per_s * shards for b in limits)])),
                }
            )
        scenarios[name] = {
            "system_cpu_ms_per_order": total,
            "bounds": {b.part: _round(b.orders_per_s) for b in limits},
            "rows": rows,
        }
    return {
        "label": "projection (arithmetic on the figures measured in this run, not a measurement)",
        "cores_per_machine": cores,
        "headroom": headroom,
        "machines_per_shard": MACHINES_PER_SHARD,
        "measured_single_node_orders_per_s": (closed_loop(single) or {})
        .get("orders", {})
        .get("terminal_per_s_steady"),
        "scenarios": scenarios,
    }


def _round(value: float) -> float:
    return round(value, -1) if value >= 100 else round(value, 1)


def markdown(result: dict[str, Any]) -> str:
    scenarios = result["scenarios"]
    if not scenarios:
        return "No projection: it needs both systems' closed-loop phase.\n"
    lines = [
        f"**{result['label'].capitalize()}.** Machines of {result['cores_per_machine']} cores kept at "
        f"{result['headroom']:.0%} CPU; a shard per {result['machines_per_shard']} machines. One machine "
        f"measured: {result['measured_single_node_orders_per_s']} orders/s (single node, closed loop). "
        "CPU ms per order: "
        + "; ".join(f"{name} {s['system_cpu_ms_per_order']}" for name, s in scenarios.items())
        + ".",
        "",
        "| part that one more machine does not multiply | "
        + " | ".join(f"bound, {n}" for n in scenarios)
        + " |",
        "| --- |" + " ---: |" * len(scenarios),
    ]
    parts = sorted({p for s in scenarios.values() for p in s["bounds"]})
    for part in parts:
        cells = [_fmt(s["bounds"].get(part)) for s in scenarios.values()]
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    lines += ["", "| machines | " + " | ".join(f"unpartitioned, {n}" for n in scenarios) + " | shards | "]
    lines[-1] += " | ".join(f"partitioned, {n}" for n in scenarios) + " |"
    lines.append("| ---: |" + " --- |" * len(scenarios) + " ---: |" + " ---: |" * len(scenarios))
    count = len(next(iter(scenarios.values()))["rows"]) if scenarios else 0
    for i in range(count):
        rows = [s["rows"][i] for s in scenarios.values()]
        unpartitioned = [f"{_fmt(r['unpartitioned'])} ({_short(r['bound_by'])})" for r in rows]
        partitioned = [_fmt(r["partitioned"]) for r in rows]
        lines.append(
            f"| {rows[0]['machines']} | "
            + " | ".join(unpartitioned)
            + f" | {rows[0]['shards']} | "
            + " | ".join(partitioned)
            + " |"
        )
    return "\n".join(lines) + "\n"


def _short(part: str) -> str:
    return part.split(" (")[0]


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"
