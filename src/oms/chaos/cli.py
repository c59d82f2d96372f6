"""`oms chaos`: wired into the `oms` command by `register(app)`."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from oms.kernel.settings import ExecutionMode


def chaos(
    ci: Annotated[bool, typer.Option("--ci", help="The CI size (1,000 orders, 12 kills, ~3 min)")] = False,
    cluster: Annotated[
        bool, typer.Option("--cluster", help="Against `oms up --cluster`: replicas, standby relays, 3 NATS")
    ] = False,
    orders: Annotated[int | None, typer.Option(help="Orders to send [10,000]")] = None,
    customers: Annotated[int | None, typer.Option(help="Customers [200]")] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds the workload and faults last [720]")] = None,
    kills: Annotated[int | None, typer.Option(help="SIGKILLs of services and relays [100]")] = None,
    nats_restarts: Annotated[int | None, typer.Option(help="NATS server crashes [5]")] = None,
    pg_restarts: Annotated[int | None, typer.Option(help="PostgreSQL server crashes [3]")] = None,
    duplicates: Annotated[int | None, typer.Option(help="Events delivered twice [300]")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed")] = None,
    execution: Annotated[
        ExecutionMode | None, typer.Option(help="The system's execution mode: market or immediate [market]")
    ] = None,
    output_dir: Annotated[Path, typer.Option(help="Where the report is written")] = Path("bench-results"),
    env: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE for the system the run starts (repeatable)")
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the system's data folder")] = False,
) -> None:
    """Kill services, relays, NATS and PostgreSQL under load (orders executed at the market's quotes); then
    prove nothing was lost or doubled and every execution was at a price the market quoted."""
    from oms.bench.cli import env_pairs, run_loop
    from oms.bench.system import LaunchedSystem, TargetError
    from oms.chaos import report as chaos_report
    from oms.chaos.observe import server_errors
    from oms.chaos.run import ChaosConfig, run_chaos

    overrides: dict[str, Any] = {
        "orders": orders,
        "customers": customers,
        "duration": duration,
        "kills": kills,
        "nats_restarts": nats_restarts,
        "pg_restarts": pg_restarts,
        "duplicates": duplicates,
        "seed": seed,
        "execution": execution,
    }
    if execution is ExecutionMode.MANUAL:  # nothing would execute: every order is swept
        print("oms chaos: --execution manual is not supported (no admin matches orders)", file=sys.stderr)
        raise typer.Exit(2)
    config = replace(
        ChaosConfig.sized(ci, cluster), **{k: v for k, v in overrides.items() if v is not None}
    ).scheduled(datetime.now(UTC))
    console = Console(width=None if sys.stdout.isatty() else 150)
    work_dir = Path(tempfile.mkdtemp(prefix="oms-chaos-"))
    system = LaunchedSystem(
        work_dir / "data", extra_env={**config.system_env(), **env_pairs(env or [])}, cluster=config.cluster
    )
    try:
        console.print(f"starting a system in {work_dir} …")
        target = system.start()
        report = run_loop(run_chaos(config, target, console))
        report["server_errors"] = server_errors(system.data_dir / "logs")
    except TargetError as exc:
        print(f"oms chaos: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    finally:
        system.stop()
        if keep:
            console.print(f"data kept in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    chaos_report.show(report, console)
    json_path, md_path = chaos_report.save(report, output_dir, time.strftime("%Y%m%d-%H%M%S"))
    console.print(f"report: {json_path}, {md_path}")
    if report["violations"]:
        print(f"oms chaos: {len(report['violations'])} violation(s)", file=sys.stderr)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `chaos` to the `oms` command line."""
    app.command("chaos")(chaos)
