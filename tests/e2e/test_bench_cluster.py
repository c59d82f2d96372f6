"""`oms bench --cluster` at a tiny size (~60 s on 2 cores): a single node, then `oms up --cluster`, with the
same load; every order of both executes, the cluster's roles are counted over their replicas (its PostgreSQL
by server) and the pair's report stands them side by side, with a projection that says what it is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.long]


@pytest.mark.timeout(300)
def test_oms_bench_cluster_benches_both_systems_with_the_same_load(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "oms", "bench", "--cluster", "--duration", "3", "--customers", "3"]
    argv += ["--rate", "20", "--concurrency", "2", "--symbols", "3", "--list-rate", "0", "--no-limits"]
    argv += ["--output-dir", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (pair,) = tmp_path.glob("*-pair.json")
    results = json.loads(pair.read_text())
    for system in ("single_node", "cluster"):
        phases = results[system]["phases"]
        assert [p["phase"] for p in phases] == ["rate 20/s", "closed loop x2"]
        for phase in phases:
            orders = phase["orders"]
            assert orders["accepted"] > 0 and orders["matched"] == orders["accepted"], (system, orders)
            # Read from every replica's own port (a retry is allowed: two replicas may contend for a row).
            assert orders["consumer_retries"] is not None, (system, orders)
    cluster = results["cluster"]["phases"][-1]["processes"]
    assert cluster["order"]["processes"] == 2 and cluster["nats"]["processes"] == 3
    assert {"postgres-order", "postgres-account"} <= set(cluster)
    assert "postgres" in results["single_node"]["phases"][-1]["processes"]
    rows = {row["name"]: row for row in results["comparison"]}
    loop = rows["orders/s finished, steady (closed loop x2)"]
    assert loop["single_node"] and loop["cluster"]
    assert rows["CPU per order: postgres (closed loop x2)"]["cluster"]  # the servers together
    assert results["projection"]["label"].startswith("projection")
    assert set(results["projection"]["scenarios"]) == {"cluster", "single + R3"}
    markdown = next(tmp_path.glob("*-pair.md")).read_text()
    assert "## Orders/s against machines: a projection, not a measurement" in markdown
    assert {p.name.split("-", 2)[-1] for p in tmp_path.glob("*.json")} == {
        "single-node.json",
        "cluster.json",
        "pair.json",
    }
