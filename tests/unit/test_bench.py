"""The bench's arithmetic and report: percentiles, rates, ratios, pgbench parsing, the figures table."""

from __future__ import annotations

import math
from typing import Any

from oms.bench.pgbench import COMMITS_PER_ORDER, SCRIPT, parse_pgbench
from oms.bench.report import figures, markdown
from oms.bench.stats import bucket_percentile, latency_summary, per_second, percentile, ratio, steady_rate

PGBENCH_OUTPUT = """pgbench (18.6)
transaction type: /tmp/x.sql
number of clients: 16
number of transactions actually processed: 10782
number of failed transactions: 0 (0.000%)
latency average = 1.109 ms
initial connection time = 12.907 ms
tps = 3605.664324 (without initial connection time)
"""


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7
    assert math.isnan(percentile([], 50))


def test_latency_summary_reports_milliseconds() -> None:
    summary = latency_summary([0.001, 0.002, 0.003, 0.004, 0.100])
    assert summary["count"] == 5
    assert summary["p50_ms"] == 3.0
    assert summary["max_ms"] == 100.0
    assert latency_summary([]) == {"count": 0}


def test_per_second_buckets_and_steady_rate_trims_the_ramps() -> None:
    counts = per_second([0.1, 0.2, 1.5, 2.5, 2.6, 9.9, 42.0], start=0.0, end=10.0)
    assert counts == [2, 1, 2, 0, 0, 0, 0, 0, 0, 1]
    assert steady_rate([1, 1, 100, 100, 100, 100, 1, 1]) == 100
    assert steady_rate([5, 5]) == 5


def test_ratio_is_none_without_a_limit() -> None:
    assert ratio(250, 1000) == 0.25
    assert ratio(250, None) is None
    assert ratio(None, 1000) is None
    assert ratio(250, 0) is None


def test_pgbench_summary_is_parsed() -> None:
    parsed = parse_pgbench(PGBENCH_OUTPUT)
    assert parsed == {"tps": 3605.664324, "latency_avg_ms": 1.109, "transactions": 10782, "failed": 0}


def test_pgbench_script_commits_four_times_per_order_like_the_real_flow() -> None:
    assert SCRIPT.count("COMMIT;") == COMMITS_PER_ORDER == 4
    assert SCRIPT.count("INSERT INTO outbox") == 3  # created, reserved, matched (settle publishes nothing)
    assert SCRIPT.count("INSERT INTO inbox") == 3  # reserve, match, settle


def _results() -> dict[str, Any]:
    phase = {
        "phase": "closed loop x32",
        "config": {"rate": None},
        "orders": {"terminal_per_s_steady": 600.0},
        "latency": {"create_to_matched": {"p50_ms": 20.0, "p99_ms": 80.0}},
        "http": {"create_order": {"p99_ms": 30.0}, "list_orders": {"p99_ms": 15.0}},
        "relay": {"events_per_order": 3.0, "occurred_to_stored": {"p99_ms": 9.0}},
    }
    rated = {**phase, "phase": "rate 250/s", "config": {"rate": 250.0}}
    rated["latency"] = {"create_to_matched": {"p50_ms": 10.0, "p99_ms": 120.0}}
    return {
        "phases": [rated, phase],
        "limits": {
            "postgres": {"orders_per_s": 1200.0},
            "jetstream": {"acked_per_s": 3000.0},
            "relay": {
                "steady": [
                    {
                        "offered_events_per_s": 10_000,
                        "relayed_events_per_s": 9_990,
                        "commit_to_stored": {"p99_ms": 12.0},
                    }
                ],
                "drain": {"events_per_s": 32_000.0},
            },
        },
        "list_bench": {"orders_stored": 1_000_000, "customer token, 1 client": {"p99_ms": 8.0}},
        "at_rest": {"total_pss_mb": 600.0, "total_rss_mb": 900.0},
    }


def test_each_figure_stands_beside_its_limit_and_target() -> None:
    rows = {f.name: f for f in figures(_results())}
    e2e = rows["end-to-end orders/s (closed loop x32)"]
    assert (e2e.measured, e2e.limit, e2e.ratio, e2e.met) == (600.0, 1200.0, 0.5, False)  # < 1,000
    assert rows["create→MATCHED p99 (rate 250/s)"].met is False  # 120 ms > 30 ms
    assert rows["events/s through JetStream (closed loop x32)"].measured == 1800.0
    assert rows["relay events/s (backlog drain)"].met is True
    assert rows["memory at rest, whole system (PSS sum)"].met is True
    relay = next(f for name, f in rows.items() if name.startswith("relay commit→publish"))
    assert relay.met is True


def test_markdown_table_marks_missed_targets() -> None:
    table = markdown(_results())
    assert table.startswith("| figure | measured | limit (same run) | ratio | target | met |")
    assert "| create→MATCHED p99 (rate 250/s) | 120.0 ms |  |  | ≤ 30 ms at 250/s | **no** |" in table
    assert "50%" in table


def test_market_phases_stand_beside_the_targets_of_issue_12() -> None:
    results = _results()
    results["resting"] = {
        "config": {"resting": 10_000, "symbol": "AAPL", "quotes_per_second": 100.0, "rate": 100.0},
        "crossed": {
            "quote_to_execution": {"p50_ms": 4.0, "p99_ms": 25.0},
            "not_executed": 0,
            "executed_at_another_price": 0,
            "uncrossed_not_resting": 1,
        },
        "marketable": {
            "without resting": {"create_to_matched": {"p50_ms": 9.0, "p99_ms": 20.0}},
            "with resting": {"create_to_matched": {"p50_ms": 10.0, "p99_ms": 22.0}},
        },
    }
    results["absorb"] = {"config": {"max_lag_ms": 100.0}, "steps": [{}], "absorbed_quotes_per_s": 3990.0}
    rows = {f.name: f for f in figures(results)}
    quote_p99 = rows["quote→execution p99 (10,000 resting on AAPL, 100 quotes/s)"]
    assert (quote_p99.measured, quote_p99.met) == (25.0, False)  # over 20 ms
    assert rows["resting orders executed otherwise than at their crossing quote"].met is False
    assert rows["marketable create→MATCHED p99 at 100/s (with resting on AAPL)"].measured == 22.0
    assert rows["marketable create→MATCHED p99 at 100/s (without resting on AAPL)"].measured == 20.0
    assert rows["quotes/s the order service absorbs (probe quote→execution p99 ≤ 100 ms)"].measured == 3990.0


def test_a_percentile_from_two_readings_of_a_histogram_is_its_buckets_bound() -> None:
    before = {0.001: 10.0, 0.005: 10.0, 0.02: 10.0, math.inf: 10.0}
    after = {0.001: 60.0, 0.005: 108.0, 0.02: 109.0, math.inf: 110.0}  # 100 more: 50 ≤ 1 ms, 98 ≤ 5 ms
    assert bucket_percentile(before, after, 50) == 0.001
    assert bucket_percentile(before, after, 90) == 0.005
    assert bucket_percentile(before, after, 99) == 0.02
    assert bucket_percentile(before, before, 99) is None
