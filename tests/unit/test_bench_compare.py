"""`oms bench --cluster`: CPU per order by component and the single-node-vs-cluster table."""

from __future__ import annotations

from typing import Any

from oms.bench.compare import (
    SYSTEM_TOTAL,
    cpu_markdown,
    cpu_per_order,
    cpu_tables,
    marginal_cpu_per_order,
    markdown,
    rows,
)
from oms.bench.pair import ONE, PAIR
from oms.bench.projection import bounds, costs, projection
from oms.bench.projection import markdown as projection_markdown
from oms.bench.system import Target


def _cpu(**pct: float) -> dict[str, dict[str, float]]:
    def role(name: str) -> str:
        return name.replace("postgres_", "postgres-").replace("relay_", "relay-").replace("_", " ")

    return {role(name): {"cpu_pct": value, "rss_mb_max": 0.0, "processes": 1} for name, value in pct.items()}


def _phase(name: str, rate: float | None, sent: float, **pct: float) -> dict[str, Any]:
    return {
        "phase": name,
        "config": {"rate": rate},
        "orders": {"sent_per_s": sent, "terminal_per_s_steady": sent},
        "latency": {"create_to_matched": {"p50_ms": 10.0, "p99_ms": 30.0}},
        "http": {"create_order": {"p99_ms": 5.0}},
        "relay": {"occurred_to_stored": {"p99_ms": 4.0}},
        "processes": _cpu(**pct),
    }


def test_cpu_per_order_is_a_roles_cpu_over_the_orders_per_second_of_the_same_window() -> None:
    # order: 50 % of a core at 250 orders/s = 0.5 CPU-s/s / 250 orders/s = 2 ms per order.
    phase = _phase(
        "rate 250/s", 250.0, 250.0, order=50.0, postgres=75.0, bench_client=25.0, whole_machine=180.0
    )
    ms = cpu_per_order(phase)
    assert ms["order"] == 2.0
    assert ms["postgres"] == 3.0
    assert ms["bench client"] == 1.0
    assert ms[SYSTEM_TOTAL] == 5.0  # the system's roles only: not the bench client nor the whole machine
    assert cpu_per_order({**phase, "processes": {}}) == {}


def test_a_clusters_postgresql_servers_are_counted_each_and_together() -> None:
    phase = _phase("closed loop x32", None, 500.0, order=50.0, postgres_order=30.0, postgres_account=20.0)
    ms = cpu_per_order(phase)
    assert (ms["postgres-order"], ms["postgres-account"], ms["postgres"]) == (0.6, 0.4, 1.0)
    assert ms[SYSTEM_TOTAL] == 2.0  # the servers once, not again as `postgres`


def test_marginal_cpu_per_order_leaves_out_what_is_spent_whatever_the_load() -> None:
    # The order service spends 10 % of a core on quotes whatever the load, 2 ms per order on top.
    low = _phase("rate 250/s", 250.0, 250.0, order=60.0, nats=5.0, whole_machine=120.0)
    high = _phase("closed loop x32", None, 750.0, order=160.0, nats=15.0, whole_machine=195.0)
    marginal = marginal_cpu_per_order(low, high, cores=2)
    assert marginal == {"nats": 0.2, "order": 2.0, SYSTEM_TOTAL: 2.2}
    assert cpu_per_order(high)["order"] < cpu_per_order(low)["order"]  # the fixed part shared out
    # Two rates too close to tell a slope from noise: none.
    assert marginal_cpu_per_order(low, _phase("x", None, 260.0, order=70.0), cores=2) == {}
    # A machine already saturated at the lower rate: the roles only share the same cores out differently.
    assert marginal_cpu_per_order(low, high, cores=1) == {}
    tables = cpu_tables({"phases": [low, high], "machine": {"nproc": 2}})
    assert list(tables) == ["rate 250/s", "closed loop x32", "marginal, rate 250/s → closed loop x32"]


def _results(cluster: bool) -> dict[str, Any]:
    factor = 0.5 if cluster else 1.0
    limits: dict[str, Any] = {
        "postgres": {"orders_per_s": 900.0},
        "jetstream": {
            "acked_per_s": 40_000 * factor,
            "replicas": 3 if cluster else 1,
            "ack_round_trip": {"p50_ms": 0.5 / factor, "p99_ms": 2.0 / factor},
        },
        "relay": {
            "drain": {"events_per_s": 30_000 * factor},
            "steady": [{"commit_to_stored": {"p99_ms": 10.0}}],
        },
    }
    if cluster:
        limits["jetstream_r1"] = {"acked_per_s": 35_000.0, "replicas": 1, "ack_round_trip": {"p50_ms": 0.6}}
    return {
        "phases": [
            _phase("rate 250/s", 250.0, 250.0, order=50.0 / factor),
            _phase("closed loop x32", None, 1000.0 * factor, order=90.0),
        ],
        "limits": limits,
        "at_rest": {"total_pss_mb": 600.0 / factor},
    }


def test_the_side_by_side_rows_match_phases_by_name_and_isolate_the_cost_of_replication() -> None:
    found = {row.name: row for row in rows(_results(False), _results(True))}
    loop = found["orders/s finished, steady (closed loop x32)"]
    assert (loop.single, loop.cluster, loop.ratio) == (1000.0, 500.0, 0.5)
    cpu = found["CPU per order: order (rate 250/s)"]
    assert (cpu.single, cpu.cluster, cpu.ratio) == (2.0, 4.0, 2.0)
    assert found["JetStream acked publishes/s, R1 vs R3"].ratio == 0.5
    same_broker = found["JetStream acked publishes/s (the cluster's broker, R1 vs R3)"]
    assert (same_broker.single, same_broker.cluster) == (35_000.0, 20_000.0)
    assert found["JetStream publish→ack p99 (the cluster's broker, R1 vs R3)"].single is None  # not measured
    assert found["relay events/s, backlog drain, R1 vs R3"].cluster == 15_000.0
    assert found["memory at rest, PSS sum"].ratio == 2.0
    assert not any("whole machine" in name and "CPU per order" in name for name in found)


def test_the_markdown_tables() -> None:
    table = markdown(_results(False), _results(True))
    assert table.startswith("| figure | single node | cluster | cluster / single |")
    assert (
        "| orders/s finished, steady (closed loop x32) | 1,000 orders/s | 500.0 orders/s | ×0.50 |" in table
    )
    assert "| create→MATCHED p99 (rate 250/s) | 30.0 ms | 30.0 ms | ×1.00 |" in table
    assert "| JetStream publish→ack p99 (the cluster's broker, R1 vs R3) | – | 4.00 ms |  |" in table
    cpu = cpu_markdown(_results(False), _results(True)).splitlines()
    assert cpu[0].startswith("| CPU ms per order | single: rate 250/s | single: closed loop x32 |")
    assert cpu[-1].startswith(f"| {SYSTEM_TOTAL} |")  # the total last


def test_a_pair_has_smaller_defaults_than_one_bench() -> None:
    assert PAIR.duration < ONE.duration
    assert (PAIR.resting, PAIR.absorb_seconds, PAIR.list_orders) == (0, 0.0, 0)
    assert PAIR.rates == (250.0,)  # the SPEC §6 floor's rate, beside the closed loop
    assert PAIR.concurrency


def test_a_clusters_scratch_databases_live_on_a_named_services_server() -> None:
    target = Target(
        urls={"order": "http://127.0.0.1:1"}, admin=("a", "b"), pg_host="127.0.0.1", pg_password="pw"
    )
    target.pg_ports = {"order": 17010, "account": 17011}
    assert target.database_url("account") == "postgresql://oms:pw@127.0.0.1:17011/account"
    assert target.database_url("oms_bench_limits") is None  # no server of its own
    assert target.database_url("oms_bench_limits", server="order") == (
        "postgresql://oms:pw@127.0.0.1:17010/oms_bench_limits"
    )
    single = Target(urls={}, admin=("a", "b"), pg_host="h", pg_port=5999, pg_password="pw")
    assert (
        single.database_url("x", server="order") == single.database_url("x") == "postgresql://oms:pw@h:5999/x"
    )


def test_the_projection_is_arithmetic_on_the_measured_figures_and_says_so() -> None:
    cluster = {
        "machine": {"nproc": 2},
        "phases": [
            {
                **_phase(
                    "closed loop x32",
                    None,
                    500.0,
                    order=100.0,
                    nats=20.0,
                    postgres_order=50.0,
                    relay_order=10.0,
                ),
                "relay": {"events_per_order": 3.0},
            }
        ],
        "limits": {"jetstream": {"acked_per_s": 9000.0, "replicas": 3}},
    }
    single = {
        "phases": [
            _phase("closed loop x32", None, 1000.0, order=50.0, nats=5.0, postgres=25.0, relay_order=5.0)
        ]
    }
    found = costs(single, cluster)
    # The cluster's own: order 2 ms, nats 0.4, postgres-order 1 ms, relay-order 0.2 ms.
    assert found["cluster"][SYSTEM_TOTAL] == 3.6
    # The single node's (order 0.5, postgres 0.25 — all on the order server here —, relay 0.05) with the
    # cluster's NATS (0.4): 1.2 ms.
    assert found["single + R3"]["postgres-order"] == 0.25
    assert found["single + R3"][SYSTEM_TOTAL] == 1.2
    limits = {b.part: b.orders_per_s for b in bounds(found["cluster"], cluster, headroom=0.5)}
    assert limits["postgres-order (one server, a machine of its own)"] == 1000.0  # 2 cores × 500 ms / 1 ms
    assert limits["relay-order (one active process: one core)"] == 2500.0  # 500 ms / 0.2 ms
    assert limits["the events stream (one R3 leader, measured on the one machine)"] == 3000.0  # 9,000 / 3
    result = projection(single, cluster, machines=(3, 12), headroom=0.5)
    assert result["label"].startswith("projection") and "not a measurement" in projection_markdown(result)
    three, twelve = result["scenarios"]["cluster"]["rows"]
    assert (three["by_cpu"], three["unpartitioned"], three["bound_by"]) == (
        830.0,
        830.0,
        "CPU",
    )  # 3×2×500/3.6
    assert twelve["by_cpu"] == 3330.0
    assert (twelve["unpartitioned"], twelve["bound_by"]) == (
        1000.0,
        "postgres-order (one server, a machine of its own)",
    )
    assert (twelve["shards"], twelve["partitioned"]) == (4, 3330.0)  # the shards lift the bounds: CPU again
