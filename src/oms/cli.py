"""The `oms` command line."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from oms.kernel.settings import ExecutionMode, Settings, port_env_name
from oms.runtime.ports import PortUnavailable

if TYPE_CHECKING:
    from oms.kernel.broker import DeadLetter, JetStreamBroker
    from oms.runtime.audit import AuditReport

T = TypeVar("T")


def _typer(help: str) -> typer.Typer:
    # Plain help (click's): Rich's reads "[env …]" in a help text as markup and shows every flag as <bool>.
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None)


app = _typer("OMS: an order management system for brokerages.")
admin_app = _typer("Manage users directly in the auth database.")
app.add_typer(admin_app, name="admin")
dlq_app = _typer("The dead-letter queue: messages consumers gave up on.")
app.add_typer(dlq_app, name="dlq")
db_app = _typer("PostgreSQL servers of your own (`oms up --external`): roles and databases.")
app.add_typer(db_app, name="db")
console = Console(soft_wrap=True)


def fail(message: str) -> NoReturn:
    """Exit non-zero with a one-line reason on stderr."""
    print(f"oms: {message}", file=sys.stderr)
    raise typer.Exit(1)


def _settings(**overrides: object) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]


DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", envvar="OMS_DATA_DIR", metavar="PATH", help="The data folder [default: ./.oms]"
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]


def _port(what: str, default: int) -> Any:
    return typer.Option(
        envvar=f"OMS_{what.upper()}_PORT",
        metavar="PORT",
        help=f"The {what} service's port [default: {default}]",
    )


def _show_version(shown: bool) -> None:
    if shown:
        from importlib.metadata import version

        print(f"oms {version('oms')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_show_version, help="Print the version and exit"),
    ] = False,
) -> None:
    """OMS: an order management system for brokerages."""


@app.command(short_help="Run everything in the foreground.")
def up(
    data_dir: DataDir = None,
    execution: Annotated[
        ExecutionMode | None,
        typer.Option(
            envvar="OMS_EXECUTION",
            help="market (default): at the quote crossing it; immediate: at the limit; manual: by an admin",
        ),
    ] = None,
    external: Annotated[
        bool,
        typer.Option(
            "--external",
            envvar="OMS_EXTERNAL",
            help="Use the configured PostgreSQL and NATS servers (README)",
        ),
    ] = False,
    cluster: Annotated[
        bool,
        typer.Option(
            "--cluster",
            envvar="OMS_CLUSTER",
            help="The layout of real hosts on this machine: 3 NATS servers (streams R3), a PostgreSQL server"
            " per service, 2 replicas of every service sharing its port (SO_REUSEPORT), an active and a"
            " standby relay per database and market feed",
        ),
    ] = False,
    auth_port: Annotated[int | None, _port("auth", 668)] = None,
    order_port: Annotated[int | None, _port("order", 666)] = None,
    account_port: Annotated[int | None, _port("account", 667)] = None,
    backoffice_port: Annotated[int | None, _port("backoffice", 669)] = None,
    market_port: Annotated[int | None, _port("market", 670)] = None,
) -> None:
    """Run everything in the foreground: PostgreSQL, NATS, the services. Ctrl-C stops it all.

    Other ports (PostgreSQL, NATS, the relays' metrics) and every other setting: OMS_* variables (README)."""
    from oms.runtime.supervisor import StartError, run

    settings = _settings(
        data_dir=data_dir,
        execution=execution,
        external=external or None,
        cluster=cluster or None,
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


@app.command(short_help="Run one component (replicas by hand).")
def serve(
    component: Annotated[Component, typer.Argument(metavar="COMPONENT", help="What to run")],
    port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT", help="Port to listen on (a relay: its metrics) [env: OMS_<COMPONENT>_PORT]"
        ),
    ] = None,
    service: Annotated[Relayed | None, typer.Option(help="The database a relay reads (relay only)")] = None,
    host: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS",
            help="Address to listen on (a relay: its /metrics, /livez, /readyz)"
            " [env: OMS_HOST; a relay: OMS_METRICS_HOST]",
        ),
    ] = None,
    reuse_port: Annotated[
        bool | None,
        typer.Option(
            "--reuse-port",
            help="Share the port with the other replicas on this host (SO_REUSEPORT) [env: OMS_PORT_SHARING]",
        ),
    ] = None,
    replica_port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            help="Also answer on this port of its own (to probe this replica) [env: OMS_REPLICA_PORT]",
        ),
    ] = None,
) -> None:
    """Run one component in the foreground (for replicas and for `oms up`)."""
    from oms.kernel.logging import configure_logging

    if component is Component.relay:
        if service is None:
            fail("oms serve relay needs --service order|account")
        settings = _settings()
        configure_logging(f"relay-{service.value}", settings.log_format, settings.log_level)
        _serve_relay(_settings(**{f"{service.value}_relay_port": port, "metrics_host": host}), service.value)
        return
    settings = _settings(
        **{
            f"{component.value}_port": port,
            "host": host,
            "port_sharing": reuse_port,
            "replica_port": replica_port,
        }
    )
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
    from oms.runtime.ports import bound

    port = settings.port_of(component)
    try:
        what = f"the {component} service"
        listening = [bound(settings.host, port, what, port_env_name(component), shared=settings.port_sharing)]
        if settings.replica_port is not None:
            listening.append(
                bound(settings.host, settings.replica_port, f"{what}'s replica", "--replica-port")
            )
        if component in CONSUMERS or component == MARKET:
            access_for(settings, component)  # its broker identity, checked before anything starts
        api = importlib.import_module(f"oms.{component}.app").create_app(settings)
        config = server_config(api, settings, port)
    except (PortUnavailable, NatsConfigError, ServingConfigError, ReplayError) as exc:
        fail(str(exc))
    server = uvicorn.Server(config)
    # Bound before the app starts, listening once it has: no connection is given to a replica still starting.
    server.run(sockets=listening)
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
            settings.metrics_host,
            metrics_port,
            f"the {service} relay's metrics and probes",
            port_env_name(component),
        )
        url = settings.database_url(f"{service}_relay")
        nats = access_for(settings, f"relay-{service}")
        stop = threading.Event()
        run_relay(service, url, nats, stop, metrics_port, delay, metrics_host=settings.metrics_host)
    except (RelayConfigError, NatsConfigError, RuntimeError, PortUnavailable) as exc:
        fail(str(exc))


@admin_app.command("create")
def admin_create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The new admin's username")],
    data_dir: DataDir = None,
    password: Annotated[
        str | None,
        typer.Option(
            prompt="Password for the new admin",
            hide_input=True,
            confirmation_prompt=True,
            envvar="OMS_NEW_ADMIN_PASSWORD",
            metavar="PASSWORD",
            show_envvar=True,
            help="Asked for when not given (better than on the command line, where `ps` shows it)",
        ),
    ] = None,
) -> None:
    """Create an admin user (asks for the password), whether or not the system is running."""
    from oms.runtime.admin import create_admin

    try:
        create_admin(_settings(data_dir=data_dir), name, password or "")
    except Exception as exc:
        fail(str(exc))
    console.print(f"admin {name!r} created")


@app.command(short_help="Check every invariant; exit 1 on a violation.")
def audit(
    data_dir: DataDir = None,
    settle_seconds: Annotated[
        float,
        typer.Option(
            metavar="SECONDS", help="How long orders still in flight may take to settle before they count"
        ),
    ] = 10.0,
    as_json: AsJson = False,
) -> None:
    """Check every invariant of the order and account databases of the running system; exit 1 on any
    violation."""
    import asyncio

    from oms.runtime.databases import NoRunningSystem, database_urls

    try:
        settings = _settings(data_dir=data_dir)
        with database_urls(settings, ("audit_order", "audit_account"), may_start=False) as urls:
            from oms.runtime.audit import MarketRules, run_audit  # after the check: it imports every store

            rules = MarketRules.of_running(settings)
            report = asyncio.run(run_audit(urls["audit_order"], urls["audit_account"], settle_seconds, rules))
    except NoRunningSystem as exc:
        fail(str(exc))
    except Exception as exc:
        fail(f"audit could not run: {_reason(exc)}")
    if as_json:
        _print_json(report.as_dict())
    else:
        _print_audit(report)
    if not report.clean:
        raise typer.Exit(1)


def _print_audit(report: AuditReport) -> None:
    from rich.table import Table

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
        console.print(f"[red]✗[/] {violation}", markup=True, highlight=False)
    if report.clean:
        console.print("[green]✓ every invariant holds")


def _print_json(content: object) -> None:
    import simplejson

    print(simplejson.dumps(content, use_decimal=True, indent=2))


def _reason(exc: BaseException) -> str:
    """One line, never empty (a timeout's text is)."""
    return " ".join(str(exc).split()) or type(exc).__name__


class Database(StrEnum):
    auth = "auth"
    order = "order"
    account = "account"
    market = "market"


@db_app.command("provision")
def db_provision(
    admin_url: Annotated[
        str,
        typer.Option(
            "--admin-url", envvar="OMS_PG_ADMIN_URL", metavar="URL", help="A superuser's postgresql:// URL"
        ),
    ],
    database: Annotated[
        list[Database] | None,
        typer.Option(metavar="NAME", help="Only this service's database (repeatable) [default: all four]"),
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
    """The broker as the operator identity: of the system running on this data folder, or (`--external`, or
    OMS_NATS_URL given) the configured one, its credentials from OMS_NATS_* or the identities folder.
    NoRunningSystem at once when neither."""
    from oms.runtime.databases import NoRunningSystem, running_state

    configured = settings.external or "nats_url" in settings.model_fields_set
    state = None if configured else running_state(settings)
    if not configured and state is None:
        raise NoRunningSystem(settings, ", or give OMS_NATS_URL of a broker of your own")
    # Only now: the broker's modules take a while to import, and a refusal must be quick.
    from oms.kernel.broker import JetStreamBroker
    from oms.kernel.nats_access import access_for
    from oms.kernel.permissions import OPERATOR

    access = access_for(settings, OPERATOR)
    if state is not None:
        access = access.with_servers(str(state["nats_url"]))
    return await JetStreamBroker.connect(access, once=True, replicas=settings.stream_replicas)


def _with_operator_broker(
    settings: Settings, work: Callable[[JetStreamBroker], Awaitable[T]], what: str
) -> T:
    """`work` done with the operator's broker connection, or exit with one line saying why it could not be."""
    import asyncio

    from oms.runtime.databases import NoRunningSystem

    async def connected() -> T:
        broker = await _operator_broker(settings)
        try:
            return await work(broker)
        finally:
            await broker.close()

    try:
        return asyncio.run(asyncio.wait_for(connected(), 60))
    except NoRunningSystem as exc:
        fail(str(exc))
    except Exception as exc:
        fail(f"{what}: {_reason(exc)}")


@dlq_app.command("list")
def dlq_list(data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """The messages consumers gave up on, with the error of each."""

    async def letters(broker: JetStreamBroker) -> list[DeadLetter]:
        from oms.kernel.dlq import list_dead_letters

        await broker.ensure_topology()
        return await list_dead_letters(broker)

    found = _with_operator_broker(_settings(data_dir=data_dir), letters, "cannot read the dead-letter queue")
    if as_json:
        _print_json({"deadLetters": [_letter_json(letter) for letter in found]})
    elif not found:
        print("no dead letters")
    else:
        _print_letters(found)


def _letter_json(letter: DeadLetter) -> dict[str, object]:
    return {
        "id": letter.id,
        "seq": letter.seq,
        "subject": letter.subject,
        "consumer": letter.consumer,
        "deliveries": letter.deliveries,
        "failedAt": letter.failed_at.isoformat() if letter.failed_at else None,
        "error": letter.error,
        "msgId": letter.msg_id,
    }


def _print_letters(found: list[DeadLetter]) -> None:
    from rich.table import Table

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
    which: Annotated[
        str, typer.Argument(metavar="ID", help="A dead letter's id (`account:3`, as listed), or --all")
    ] = "",
    every: Annotated[bool, typer.Option("--all", help="Replay every dead letter")] = False,
    data_dir: DataDir = None,
) -> None:
    """Send dead letters back to their consumers."""
    if every == bool(which):
        fail("give either a dead letter's id (as `oms dlq list` shows it) or --all")

    async def send_back(broker: JetStreamBroker) -> int:
        from oms.kernel.dlq import replay

        return await replay(broker, "all" if every else which)

    count = _with_operator_broker(_settings(data_dir=data_dir), send_back, "replay failed")
    console.print(f"replayed {count} dead letter(s)")


def _register_proof_commands() -> None:
    from oms.bench.cli import register as register_bench
    from oms.chaos.cli import register as register_chaos

    register_bench(app)
    register_chaos(app)


_register_proof_commands()


def main() -> None:
    app()
