"""`oms bench`: wired into the `oms` command by `register(app)`."""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Coroutine
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop when it is installed (it comes with uvicorn[standard]): the load generator
    shares the CPUs with the system it measures, so it should spend as little of them as it can."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def env_pairs(values: list[str]) -> dict[str, str]:
    env = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {value!r}")
        env[key] = rest
    return env


class Execution(StrEnum):
    """The execution modes the bench's load can run in (`manual` would leave every order waiting)."""

    MARKET = "market"
    IMMEDIATE = "immediate"


def bench(
    duration: Annotated[
        float | None,
        typer.Option(
            help="Seconds of load per phase (0: limits and lists only) [default: 30; --cluster: 20]"
        ),
    ] = None,
    rate: Annotated[
        list[float] | None,
        typer.Option(help="Orders/s of a fixed-rate phase (repeatable) [default: none; --cluster: 250]"),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            help="Clients of a closed-loop phase (the default phase, 32; with --cluster always run)"
        ),
    ] = None,
    customers: Annotated[int, typer.Option(help="Customers sending orders")] = 50,
    list_rate: Annotated[float, typer.Option(help="list-orders requests/s during the load")] = 5.0,
    reject_ratio: Annotated[float, typer.Option(help="Share of orders that will be refused")] = 0.0,
    market_ratio: Annotated[
        float, typer.Option(help="Share of MARKET orders (the rest marketable LIMIT)")
    ] = 0.1,
    execution: Annotated[
        Execution, typer.Option(help="Execution mode of the system the bench starts")
    ] = Execution.MARKET,
    symbols: Annotated[int, typer.Option(help="Listed symbols the orders are spread over")] = 20,
    quotes_per_second: Annotated[
        float, typer.Option(help="Quotes/s per symbol the bench publishes as the system's quote source")
    ] = 0.2,
    resting: Annotated[
        int | None,
        typer.Option(
            help="Orders resting on one symbol in the resting phase (0: no such phase) [default: 10000;"
            " --cluster: 0]"
        ),
    ] = None,
    resting_quotes_per_second: Annotated[
        float, typer.Option(help="Quotes/s of that symbol during the resting phase")
    ] = 100.0,
    resting_rate: Annotated[float, typer.Option(help="Marketable orders/s during the resting phase")] = 100.0,
    resting_duration: Annotated[
        float | None, typer.Option(help="Seconds of each half of the resting phase (default: --duration)")
    ] = None,
    absorb_rate: Annotated[
        list[float] | None, typer.Option(help="Quotes/s of a step of the absorb phase (repeatable)")
    ] = None,
    absorb_seconds: Annotated[
        float | None,
        typer.Option(
            help="Seconds per step of the absorb phase (0: no such phase) [default: 10; --cluster: 0]"
        ),
    ] = None,
    limits: Annotated[bool, typer.Option(help="Measure PostgreSQL, JetStream and relay limits")] = True,
    pgbench_clients: Annotated[int, typer.Option(help="pgbench clients")] = 16,
    pgbench_seconds: Annotated[float, typer.Option(help="pgbench duration")] = 10.0,
    relay_rate: Annotated[int, typer.Option(help="Events/s offered to the relay")] = 10_000,
    relay_events_per_tx: Annotated[int, typer.Option(help="Outbox rows per transaction")] = 1,
    relay_backlog: Annotated[int, typer.Option(help="Events in the relay's drain test")] = 100_000,
    list_orders: Annotated[
        int | None,
        typer.Option(
            help="Orders bulk-loaded for the list benchmark (0: skip) [default: 1000000; --cluster: 0]"
        ),
    ] = None,
    list_customers: Annotated[int, typer.Option(help="Customers the loaded orders belong to")] = 10_000,
    output_dir: Annotated[Path, typer.Option(help="Where results are written")] = Path("bench-results"),
    plot: Annotated[bool, typer.Option("--plot", help="Also write a PNG (needs the `plot` extra)")] = False,
    env: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE for the system the bench starts (repeatable)")
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the started system's data folder")] = False,
    cluster: Annotated[
        bool,
        typer.Option(
            "--cluster",
            help="Bench a single node, then `oms up --cluster`, with the same load; report them side by side",
        ),
    ] = False,
    auth_url: Annotated[str | None, typer.Option(help="A running system's auth URL")] = None,
    order_url: Annotated[str | None, typer.Option(help="A running system's order URL")] = None,
    account_url: Annotated[str | None, typer.Option(help="A running system's account URL")] = None,
    market_url: Annotated[str | None, typer.Option(help="A running system's market URL")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="The running system's data folder (databases, broker, processes)")
    ] = None,
    admin_username: Annotated[
        str | None, typer.Option(envvar="OMS_ADMIN_USERNAME", help="The running system's admin")
    ] = None,
    admin_password: Annotated[
        str | None, typer.Option(envvar="OMS_ADMIN_PASSWORD", help="That admin's password")
    ] = None,
) -> None:
    """Measure orders/s end to end, latencies, relay and memory, beside this machine's limits."""
    from oms.bench.absorb import AbsorbConfig
    from oms.bench.http import TransportError
    from oms.bench.pair import ONE, PAIR, finish_pair, run_pair
    from oms.bench.run import BenchOptions, finish, run_bench
    from oms.bench.system import LaunchedSystem, TargetError, attach

    console = Console(width=None if sys.stdout.isatty() else 150)
    sizes = PAIR if cluster else ONE
    options = BenchOptions(
        customers=customers,
        duration=sizes.duration if duration is None else duration,
        rates=list(rate or sizes.rates),
        concurrency=concurrency or sizes.concurrency,
        list_rate=list_rate,
        reject_ratio=reject_ratio,
        market_ratio=market_ratio,
        execution=execution.value,
        symbols=symbols,
        quotes_per_second=quotes_per_second,
        resting=sizes.resting if resting is None else resting,
        resting_quotes_per_second=resting_quotes_per_second,
        resting_rate=resting_rate,
        resting_duration=resting_duration,
        absorb_rates=list(absorb_rate) if absorb_rate else list(AbsorbConfig.rates),
        absorb_seconds=sizes.absorb_seconds if absorb_seconds is None else absorb_seconds,
        limits=limits,
        pgbench_clients=pgbench_clients,
        pgbench_seconds=pgbench_seconds,
        relay_rate=relay_rate,
        relay_events_per_tx=relay_events_per_tx,
        relay_backlog=relay_backlog,
        list_orders=sizes.list_orders if list_orders is None else list_orders,
        list_customers=list_customers,
        output_dir=output_dir,
        plot=plot,
        env=env_pairs(env or []),
    )
    urls = {"auth": auth_url, "order": order_url, "account": account_url, "market": market_url}
    work_dir = Path(tempfile.mkdtemp(prefix="oms-bench-"))
    launched: LaunchedSystem | None = None
    try:
        if cluster:
            if any(urls.values()):
                raise TargetError("--cluster starts both systems itself: it takes no running system's URLs")
            stamp = time.strftime("%Y%m%d-%H%M%S")
            finish_pair(run_pair(options, console, work_dir, stamp), options, console, stamp)
            return
        if any(urls.values()):
            if not all(urls.values()) or not admin_username or not admin_password:
                raise TargetError(
                    "a running system needs --auth-url, --order-url, --account-url, --market-url and the"
                    " admin login"
                )
            target = attach(data_dir, {k: str(v) for k, v in urls.items()}, (admin_username, admin_password))
        else:
            console.print(f"starting a system in {work_dir} …")
            launched = LaunchedSystem(
                work_dir / "data", execution=options.execution, extra_env=options.system_env(work_dir)
            )
            target = launched.start()
        results = run_loop(run_bench(options, target, console, work_dir, launched=launched is not None))
        finish(results, options, console)
    except (TargetError, RuntimeError) as exc:
        print(f"oms bench: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    except TransportError as exc:  # the system it was pointed at does not answer
        print(f"oms bench: {' '.join(str(exc).split())}", file=sys.stderr)
        raise typer.Exit(1) from None
    finally:
        if launched is not None:
            launched.stop()
        if not keep:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            console.print(f"data kept in {work_dir}")


def register(app: typer.Typer) -> None:
    """Add `bench` to the `oms` command line."""
    app.command("bench")(bench)
