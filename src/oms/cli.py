"""The `oms` command line."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from oms.kernel.settings import ExecutionMode, Settings, port_env_name
from oms.runtime.ports import PortUnavailable

if TYPE_CHECKING:
    from oms.kernel.broker import JetStreamBroker

app = typer.Typer(help="OMS: an order management system for brokerages.", no_args_is_help=True)
admin_app = typer.Typer(help="Manage users directly in the auth database.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
dlq_app = typer.Typer(help="The dead-letter queue: messages consumers gave up on.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
db_app = typer.Typer(
    help="PostgreSQL servers of your own (`oms up --external`): roles and databases.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
console = Console(soft_wrap=True)


def fail(message: str) -> NoReturn:
    """Exit non-zero with a one-line reason on stderr."""
    print(f"oms: {message}", file=sys.stderr)
    raise typer.Exit(1)


def _settings(**overrides: object) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]


DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data folder [env OMS_DATA_DIR; ./.oms]")]


@app.command()
def up(
    data_dir: DataDir = None,
    execution: Annotated[
        ExecutionMode | None, typer.Option(help="immediate: executed at the limit price; manual: by an admin")
    ] = None,
    external: Annotated[
        bool, typer.Option("--external", help="Use the configured PostgreSQL and NATS servers")
    ] = False,
    auth_port: Annotated[int | None, typer.Option(help="[env OMS_AUTH_PORT; 668]")] = None,
    order_port: Annotated[int | None, typer.Option(help="[env OMS_ORDER_PORT; 666]")] = None,
    account_port: Annotated[int | None, typer.Option(help="[env OMS_ACCOUNT_PORT; 667]")] = None,
    backoffice_port: Annotated[int | None, typer.Option(help="[env OMS_BACKOFFICE_PORT; 669]")] = None,
    market_port: Annotated[int | None, typer.Option(help="[env OMS_MARKET_PORT; 670]")] = None,
) -> None:
    """Run everything in the foreground: PostgreSQL, NATS, the services. Ctrl-C stops it all."""
    from oms.runtime.supervisor import StartError, run

    settings = _settings(
        data_dir=data_dir,
        execution=execution,
        external=external or None,
        auth_port=auth_port,
        order_port=order_port,
        account_port=account_port,
        backoffice_port=backoffice_port,
        market_port=market_port,
    )
    try:
        run(settings, console)
    except (StartError, PortUnavailable) as exc:
        fail(str(exc))
    except Exception as exc:
        fail(f"{type(exc).__name__}: {exc}")


class Component(StrEnum):
    auth = "auth"
    order = "order"
    account = "account"
    backoffice = "backoffice"
    market = "market"
    relay = "relay"


class Relayed(StrEnum):
    order = "order"
    account = "account"


@app.command()
def serve(
    component: Component,
    port: Annotated[int | None, typer.Option(help="Port to listen on [env OMS_<COMPONENT>_PORT]")] = None,
    service: Annotated[Relayed | None, typer.Option(help="The database a relay reads (relay only)")] = None,
) -> None:
    """Run one component in the foreground (for replicas and for `oms up`)."""
    from oms.kernel.logging import configure_logging

    if component is Component.relay:
        if service is None:
            fail("oms serve relay needs --service order|account")
        settings = _settings()
        configure_logging(f"relay-{service.value}", settings.log_format, settings.log_level)
        _serve_relay(_settings(**{f"{service.value}_relay_port": port}), service.value)
        return
    settings = _settings(**{f"{component.value}_port": port})
    configure_logging(component.value, settings.log_format, settings.log_level)
    _serve_http(settings, component.value)


def _serve_http(settings: Settings, component: str) -> None:
    import importlib

    import uvicorn

    from oms.kernel.nats_access import NatsConfigError, access_for
    from oms.kernel.permissions import MARKET
    from oms.kernel.serving import ServingConfigError, server_config
    from oms.kernel.topology import CONSUMERS
    from oms.market.sources import ReplayError
    from oms.runtime.ports import check_bindable

    port = settings.port_of(component)
    try:
        check_bindable(settings.host, port, f"the {component} service", port_env_name(component))
        if component in CONSUMERS or component == MARKET:
            access_for(settings, component)  # its broker identity, checked before anything starts
        api = importlib.import_module(f"oms.{component}.app").create_app(settings)
        config = server_config(api, settings, port)
    except (PortUnavailable, NatsConfigError, ServingConfigError, ReplayError) as exc:
        fail(str(exc))
    server = uvicorn.Server(config)
    server.run()
    if not server.started:  # as uvicorn.run: a start that failed (its lifespan, its port) is an error
        fail(f"the {component} service did not start")


def _serve_relay(settings: Settings, service: str) -> None:
    import threading

    from oms.kernel.nats_access import NatsConfigError, access_for
    from oms.kernel.relay import RelayConfigError, run_relay
    from oms.runtime.ports import check_bindable

    component = f"{service}_relay"
    metrics_port = settings.port_of(component)
    try:
        delay = settings.relay_hold_seconds()
    except ValueError as exc:
        fail(f"OMS_NATS_SYNC_INTERVAL: {exc}")
    try:
        check_bindable(
            settings.metrics_host, metrics_port, f"the {service} relay's metrics", port_env_name(component)
        )
        url = settings.database_url(f"{service}_relay")
        nats = access_for(settings, f"relay-{service}")
        stop = threading.Event()
        run_relay(service, url, nats, stop, metrics_port, delay, metrics_host=settings.metrics_host)
    except (RelayConfigError, NatsConfigError, RuntimeError, PortUnavailable) as exc:
        fail(str(exc))


@admin_app.command("create")
def admin_create(
    name: str,
    data_dir: DataDir = None,
    password: Annotated[
        str,
        typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, envvar="OMS_NEW_ADMIN_PASSWORD"),
    ] = "",
) -> None:
    """Create an admin user (asks for the password)."""
    from oms.runtime.admin import create_admin

    try:
        create_admin(_settings(data_dir=data_dir), name, password)
    except Exception as exc:
        fail(str(exc))
    console.print(f"admin {name!r} created")


@app.command()
def audit(
    data_dir: DataDir = None,
    settle_seconds: Annotated[
        float, typer.Option(help="How long orders still in flight may take to settle before they count")
    ] = 10.0,
) -> None:
    """Check every invariant of the order and account databases; exit 1 on any violation."""
    import asyncio

    from rich.table import Table

    from oms.runtime.audit import run_audit
    from oms.runtime.databases import database_urls

    try:
        with database_urls(_settings(data_dir=data_dir), ("audit_order", "audit_account")) as urls:
            report = asyncio.run(run_audit(urls["audit_order"], urls["audit_account"], settle_seconds))
    except Exception as exc:
        fail(f"audit could not run: {exc}")
    table = Table("checked", "count", title="oms audit")
    for label, value in [
        ("customers with balances", report.customers),
        ("balances", report.balances),
        ("ledger entries", report.ledger_entries),
        ("orders", report.orders),
        ("orders not yet answered by the account", report.pending_unreserved),
        ("TRY held by customers", report.try_total),
        ("violations", len(report.violations)),
    ]:
        table.add_row(label, str(value))
    console.print(table)
    for violation in report.violations[:100]:
        console.print(f"[red]✗[/] {violation}")
    if not report.clean:
        raise typer.Exit(1)
    console.print("[green]✓ every invariant holds")


class Database(StrEnum):
    auth = "auth"
    order = "order"
    account = "account"
    market = "market"


@db_app.command("provision")
def db_provision(
    admin_url: Annotated[
        str, typer.Option("--admin-url", envvar="OMS_PG_ADMIN_URL", help="A superuser's postgresql:// URL")
    ],
    database: Annotated[
        list[Database] | None, typer.Option(help="Only this service's database (repeatable) [all four]")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Create or update the roles and databases on a PostgreSQL server as `oms up` does on its own, and
    print the OMS_*_DATABASE_URL settings (the passwords are kept in <data-dir>/secrets/)."""
    from oms.kernel.settings import SERVICES
    from oms.runtime.provision import provision
    from oms.runtime.roles import env_name

    services = tuple(d.value for d in database) if database else SERVICES
    try:
        urls = provision(admin_url, _settings(data_dir=data_dir).secrets_dir, services)
    except Exception as exc:
        fail(f"provisioning failed: {' '.join(str(exc).split())}")
    for name, url in urls.items():
        print(f"{env_name(name)}={url}")


async def _operator_broker(settings: Settings) -> JetStreamBroker:
    """The broker as the operator identity: of the system running on this data folder, or the configured
    one (its credentials from OMS_NATS_* or the identities folder)."""
    from oms.kernel.broker import JetStreamBroker
    from oms.kernel.nats_access import access_for
    from oms.kernel.permissions import OPERATOR
    from oms.runtime.databases import running_state

    access = access_for(settings, OPERATOR)
    state = running_state(settings)
    if state and not settings.external:
        access = access.with_servers(str(state["nats_url"]))
    return await JetStreamBroker.connect(access, once=True)


@dlq_app.command("list")
def dlq_list(data_dir: DataDir = None) -> None:
    """The messages consumers gave up on, with the error of each."""
    import asyncio

    from rich.table import Table

    from oms.kernel.dlq import list_dead_letters

    async def letters() -> list[Any]:
        broker = await _operator_broker(_settings(data_dir=data_dir))
        try:
            await broker.ensure_topology()
            return await list_dead_letters(broker)
        finally:
            await broker.close()

    try:
        found = asyncio.run(asyncio.wait_for(letters(), 30))
    except Exception as exc:
        fail(f"cannot read the dead-letter queue: {exc}")
    table = Table("id", "subject", "deliveries", "failed at", "error", title="dead letters")
    for letter in found:
        table.add_row(
            letter.id,
            letter.subject,
            str(letter.deliveries),
            str(letter.failed_at or ""),
            letter.error,
        )
    console.print(table)


@dlq_app.command("replay")
def dlq_replay(
    which: Annotated[str, typer.Argument(help="A dead letter's id (`account:3`, as listed), or --all")] = "",
    every: Annotated[bool, typer.Option("--all", help="Replay every dead letter")] = False,
    data_dir: DataDir = None,
) -> None:
    """Send dead letters back to their consumers."""
    import asyncio

    from oms.kernel.dlq import replay

    if every == bool(which):
        fail("give either a dead letter's id (as `oms dlq list` shows it) or --all")

    async def send_back() -> int:
        broker = await _operator_broker(_settings(data_dir=data_dir))
        try:
            return await replay(broker, "all" if every else which)
        finally:
            await broker.close()

    try:
        count = asyncio.run(asyncio.wait_for(send_back(), 60))
    except Exception as exc:
        fail(f"replay failed: {exc}")
    console.print(f"replayed {count} dead letter(s)")


def _register_proof_commands() -> None:
    from oms.bench.cli import register as register_bench
    from oms.chaos.cli import register as register_chaos

    register_bench(app)
    register_chaos(app)


_register_proof_commands()


def main() -> None:
    app()
