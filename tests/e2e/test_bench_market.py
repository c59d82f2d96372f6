"""`oms bench` in `market` mode at a tiny size, on the real `oms up` it starts: the workload's orders all
execute, and in the resting phase the quotes the bench publishes as the market feed execute exactly the
resting orders they cross, at the quote, while the others keep resting."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console

from oms.bench.run import BenchOptions, run_bench
from oms.bench.system import LaunchedSystem, Target
from tests.conftest import execute

pytestmark = [pytest.mark.e2e, pytest.mark.long]

RESTING = 200


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], Target]]:
    work_dir = tmp_path_factory.mktemp("bench")
    options = BenchOptions(
        customers=3,
        duration=3,
        rates=[20],
        list_rate=1,
        reject_ratio=0.1,
        symbols=4,
        resting=RESTING,
        resting_quotes_per_second=50,
        resting_rate=20,
        absorb_rates=[200],
        absorb_seconds=2,
        limits=False,
        list_orders=0,
        output_dir=work_dir / "results",
    )
    system = LaunchedSystem(work_dir / "data", execution="market", extra_env=options.system_env(work_dir))
    target = system.start()
    try:
        console = Console(file=(work_dir / "console.txt").open("w"), width=150)
        yield asyncio.run(run_bench(options, target, console, work_dir, launched=True)), target
    finally:
        system.stop()


@pytest.mark.timeout(300)
def test_the_market_workload_executes_every_marketable_order(
    bench_run: tuple[dict[str, Any], Target],
) -> None:
    results, _ = bench_run
    assert results["market"]["quotes"] == "published by the bench as the market feed"
    [phase] = results["phases"]
    orders = phase["orders"]
    assert orders["accepted"] > 30 and phase["http"]["errors"] == {}
    assert orders["still_pending"] == orders["missing"] == 0
    # The refused share: SELLs of a listed symbol nobody holds, canceled by the account; the rest executed.
    assert orders["canceled"] > 0 and orders["matched"] + orders["canceled"] == orders["accepted"]


@pytest.mark.timeout(300)
def test_quotes_execute_the_resting_orders_they_cross_and_no_others(
    bench_run: tuple[dict[str, Any], Target],
) -> None:
    results, target = bench_run
    resting = results["resting"]
    crossed = resting["crossed"]
    assert crossed["crossing_quotes"] >= 3 and crossed["orders_crossed"] >= 3
    assert crossed["not_executed"] == crossed["executed_at_another_price"] == 0
    assert crossed["uncrossed_not_resting"] == 0
    assert crossed["still_resting"] == RESTING - crossed["orders_crossed"] == resting["canceled_after"]
    assert crossed["quote_to_execution"]["count"] == crossed["orders_crossed"]
    assert crossed["in_order_service"]["crossing_quotes"] >= crossed["crossing_quotes"]
    stored = crossed["quote_to_matched_event_stored"]
    assert stored["count"] == crossed["orders_crossed"]
    assert stored["p50_ms"] >= crossed["quote_to_execution"]["p50_ms"]  # the event follows the commit
    # Read from the order database, not from the bench: a resting order executes at the price of the quote
    # that crossed it, which is its own limit (the ladder's levels); a marketable LIMIT order executes at
    # the quote, below its BUY limit or above its SELL limit; MARKET orders have no limit.
    url = target.database_url("order")
    assert url is not None
    symbol = resting["config"]["symbol"]
    [(at_limit,)] = execute(
        url,
        f"SELECT count(*) FROM orders WHERE asset_name = '{symbol}' AND status = 'MATCHED' "
        "AND executed_price = price",
    )
    assert results["absorb"]["probe_symbol"] != symbol
    assert at_limit == crossed["orders_crossed"]
    for flow in resting["marketable"].values():
        assert flow["accepted"] > 10 and flow["matched"] == flow["accepted"]


@pytest.mark.timeout(300)
def test_the_absorb_phase_sees_its_probes_executed(bench_run: tuple[dict[str, Any], Target]) -> None:
    results, _ = bench_run
    [step] = results["absorb"]["steps"]
    assert step["offered_per_s"] == 200 and step["published_per_s"] > 100
    assert step["probe"]["count"] >= 3 and step["probes_not_executed"] == 0
