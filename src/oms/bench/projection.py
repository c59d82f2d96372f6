"""A projection — arithmetic on measured figures, not a measurement — of orders/s against machines, from
`oms bench --cluster`: the cluster's CPU per order by component (R3 and both replicas included) and the
limits of the parts that one more machine does not multiply until they are partitioned.

The model, stated so that it can be checked:
- every machine is like the one measured (`nproc` cores) and is kept at `HEADROOM` of its CPU (the rest is
  what keeps p99 low: the bench's closed loop runs the machine flat out and its p99 shows it);
- stateless services (auth, order, account, market, back office replicas) spread over every machine, so the
  CPU bound is machines × cores × HEADROOM / (system CPU ms per order);
- unpartitioned, each of these is one process or one server, so its throughput is bounded whatever the
  number of machines: a service's PostgreSQL server (a whole machine of its own), a database's active relay
  (one Python process: one core), the events stream (one Raft leader: the acked publishes/s R3 measured
  in the same run, over the events per order);
- partitioned into `shards` (the order and account databases and their relays by customer, the events
  stream by subject), those bounds are multiplied by the shards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oms.bench.compare import SYSTEM_TOTAL, closed_loop, cpu_per_order

HEADROOM = 0.7
MACHINES = (3, 6, 12, 24)
PER_MACHINE_PARTS = 3  # machines per shard when partitioned (a shard's NATS cluster of 3, its servers)


@dataclass(frozen=True)
class Bound:
    """What limits orders/s: a part of the system and the orders/s it allows."""

    part: str
    orders_per_s: float
    scales_with_shards: bool


def bounds(cluster: dict[str, Any], headroom: float = HEADROOM) -> tuple[float, list[Bound]]:
    """(system CPU ms per order, the bounds of the parts that do not spread) from a cluster's results."""
    loop = closed_loop(cluster)
    if loop is None:
        return 0.0, []
    ms = cpu_per_order(loop)
    cores = int(cluster.get("machine", {}).get("nproc") or 1)
    found: list[Bound] = []
    for role, cost in sorted(ms.items()):
        if not cost or cost <= 0:
            continue
        if role.startswith("postgres-"):
            found.append(
                Bound(f"{role} (one server, a machine of its own)", cores * 1000 * headroom / cost, True)
            )
        elif role.startswith("relay-"):
            found.append(Bound(f"{role} (one active process: one core)", 1000 * headroom / cost, True))
    acked = cluster.get("limits", {}).get("jetstream", {}).get("acked_per_s")
    per_order = loop.get("relay", {}).get("events_per_order")
    if acked and per_order:
        replicas = cluster["limits"]["jetstream"].get("replicas", 1)
        found.append(Bound(f"the events stream (one R{replicas} leader)", acked / per_order, True))
    return ms.get(SYSTEM_TOTAL, 0.0), found


def projection(
    single: dict[str, Any],
    cluster: dict[str, Any],
    machines: tuple[int, ...] = MACHINES,
    headroom: float = HEADROOM,
) -> dict[str, Any]:
    """Projected orders/s for each number of machines, unpartitioned and partitioned; the inputs with it."""
    total_ms, limits = bounds(cluster, headroom)
    cores = int(cluster.get("machine", {}).get("nproc") or 1)
    measured_single = (closed_loop(single) or {}).get("orders", {}).get("terminal_per_s_steady")
    rows = []
    for n in machines:
        by_cpu = n * cores * 1000 * headroom / total_ms if total_ms else None
        shards = max(1, n // PER_MACHINE_PARTS)
        tight = min(limits, key=lambda b: b.orders_per_s, default=None)
        unpartitioned = min([by_cpu or 0.0, *(b.orders_per_s for b in limits)]) if by_cpu else None
        partitioned_bounds = [b.orders_per_s * (shards if b.scales_with_shards else 1) for b in limits]
        partitioned = min([by_cpu or 0.0, *partitioned_bounds]) if by_cpu else None
        rows.append(
            {
                "machines": n,
                "by_cpu": _round(by_cpu),
                "unpartitioned": _round(unpartitioned),
                "bound_by": "CPU" if tight is None or (by_cpu or 0) <= tight.orders_per_s else tight.part,
                "shards": shards,
                "partitioned": _round(partitioned),
            }
        )
    return {
        "label": "projection (arithmetic on the figures measured in this run, not a measurement)",
        "inputs": {
            "cores_per_machine": cores,
            "headroom": headroom,
            "system_cpu_ms_per_order_cluster": total_ms,
            "bounds": {b.part: _round(b.orders_per_s) for b in limits},
            "measured_single_node_orders_per_s": measured_single,
        },
        "rows": rows,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, -1) if value >= 100 else round(value, 1)


def markdown(result: dict[str, Any]) -> str:
    inputs = result["inputs"]
    lines = [
        f"**{result['label'].capitalize()}.** Machines of {inputs['cores_per_machine']} cores kept at "
        f"{inputs['headroom']:.0%} CPU; {inputs['system_cpu_ms_per_order_cluster']} CPU ms per order (the "
        f"cluster's closed loop, every replica and R3 included); one machine measured: "
        f"{inputs['measured_single_node_orders_per_s']} orders/s (single node, closed loop).",
        "",
        "| part that one more machine does not multiply | its bound, orders/s |",
        "| --- | ---: |",
    ]
    lines += [f"| {part} | {value:,.0f} |" for part, value in inputs["bounds"].items() if value is not None]
    lines += [
        "",
        "| machines | by CPU alone | unpartitioned (bound by) | partitioned: shards | partitioned |",
        "| ---: | ---: | --- | ---: | ---: |",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['machines']} | {_fmt(row['by_cpu'])} | {_fmt(row['unpartitioned'])} ({row['bound_by']}) "
            f"| {row['shards']} | {_fmt(row['partitioned'])} |"
        )
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"
