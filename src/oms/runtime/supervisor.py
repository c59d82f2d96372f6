"""`oms up`: the whole system as supervised child processes, started and stopped in order."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO

import httpx
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from oms.kernel.broker import create_topology
from oms.kernel.nats_access import NatsAccess, NatsConfigError, access_for, identities_dir, kept_access
from oms.kernel.permissions import IDENTITIES, OPERATOR
from oms.kernel.secret_file import read_or_create
from oms.kernel.settings import SERVICES, Settings, port_env_name
from oms.kernel.topology import RELAYED
from oms.runtime.nats import EmbeddedNats, NatsError
from oms.runtime.ports import check_bindable
from oms.runtime.postgres import EmbeddedPostgres, PostgresError
from oms.runtime.processes import spawn, stop, tail
from oms.runtime.provision import provision
from oms.runtime.roles import connections, connections_of, env_name

DEFAULT_ADMIN = "admin"
SERVICES_AFTER_AUTH = ("order", "account", "market")  # started together, once auth answers
# Settings given to `oms up` that its children read too (the others are set for them below).
PASSED_ON = (
    "trusted_proxies",
    "http_header_timeout_seconds",
    "client_address_key_file",
    "service_key_file",
    "revocation_poll_seconds",
    "revocation_max_staleness_seconds",
    "login_user_max_failures",
    "login_address_max_failures",
    "login_failure_window_seconds",
    "login_max_lockout_seconds",
    "register_address_max_attempts",
    "register_window_seconds",
    "market_source",
    "market_seed",
    "market_quotes_per_second",
    "market_replay_file",
    "market_replay_speed",
    "market_order_collar",
    "market_close",
    "backoffice_ticker",
)


class StartError(RuntimeError):
    """The system could not be started; the message is one line for the user."""


class StopRequested(BaseException):
    """SIGINT or SIGTERM arrived: stop everything in order."""


ChildSpec = tuple[str, list[str], str | None]  # name, `oms serve` arguments, the URL that says it started


@dataclass
class Child:
    """One supervised `oms serve …` process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_file: Path
    health_url: str | None = None  # its /readyz
    process: subprocess.Popen[bytes] | None = None
    next_restart: float = 0.0
    crashes: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.process = spawn(self.argv, log_file=self.log_file, env=self.env)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until it is ready (/readyz answers 200); a child without a health URL must at least survive its
        first second."""
        deadline = time.monotonic() + (timeout if self.health_url else 1.0)
        while True:
            if self.process is None or self.process.poll() is not None:
                raise StartError(f"{self.name} exited at start; its log ends:\n{tail(self.log_file)}")
            if self.health_url is None:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.1)
                continue
            try:
                if httpx.get(self.health_url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise StartError(f"{self.name} not healthy after {timeout:.0f}s (see {self.log_file})")
            time.sleep(0.1)


@contextmanager
def exclusive(data_dir: Path) -> Iterator[IO[str]]:
    """One `oms up` per data folder: a second one stops at once instead of sharing the servers."""
    run_dir = data_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "oms.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise StartError(f"oms is already running on {data_dir} (pid {lock.read().strip()})") from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        yield lock


def admin_credentials(settings: Settings) -> tuple[str, str, bool]:
    """The first admin's name and password, and whether the password was generated (kept in secrets)."""
    if settings.admin_username and settings.admin_password:
        return settings.admin_username, settings.admin_password.get_secret_value(), False
    path = settings.secrets_dir / "admin-password"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(secrets.token_urlsafe(12) + "\n")
        path.chmod(0o600)
    return settings.admin_username or DEFAULT_ADMIN, path.read_text().strip(), True


class System:
    """The servers and services of one data folder."""

    def __init__(self, settings: Settings, console: Console) -> None:
        self.settings = settings
        self.console = console
        self.data_dir = settings.data_dir.resolve()
        self.postgres: EmbeddedPostgres | None = None
        self.nats: EmbeddedNats | None = None
        self.children: list[Child] = []
        self.database_urls: dict[str, str] = {}  # by connection (runtime/roles.py)
        self.server_failures: dict[str, int] = {}
        self.server_retry_at: dict[str, float] = {}

    # -- start ---------------------------------------------------------------------------------
    def check_ports(self) -> None:
        s = self.settings
        wanted = [(c, s.port_of(c), f"the {c} service", port_env_name(c)) for c in self.components()]
        if not s.external:
            wanted += [
                ("pg", s.pg_port, "PostgreSQL", "OMS_PG_PORT"),
                ("nats", s.nats_port, "NATS", "OMS_NATS_PORT"),
            ]
        for _, port, what, setting in wanted:
            check_bindable(s.host, port, what, setting)
        for r in RELAYED:
            what, setting = f"the {r} relay's metrics and probes", port_env_name(f"{r}_relay")
            check_bindable(s.metrics_host, s.port_of(f"{r}_relay"), what, setting)
        if s.nats_monitor_port and not s.external:
            check_bindable("127.0.0.1", s.nats_monitor_port, "NATS monitoring", "OMS_NATS_MONITOR_PORT")

    def components(self) -> list[str]:
        """The HTTP services, in start order (auth first: the others fetch its public keys; the back office
        starts with the relays, after the services it calls)."""
        return ["auth", *SERVICES_AFTER_AUTH, "backoffice"]

    def start_groups(self) -> list[list[ChildSpec]]:
        """The children in the groups they start in: auth first (the others fetch its keys); relays last
        (the services create their outboxes)."""
        specs = self.child_specs()
        services = 1 + len(SERVICES_AFTER_AUTH)
        return [specs[:1], specs[1:services], specs[services:]]

    def child_specs(self) -> list[ChildSpec]:
        """(name, `oms serve` arguments, readiness URL) of every child, in start order."""
        specs: list[ChildSpec] = [
            (c, [c], f"http://{self.settings.host}:{self.settings.port_of(c)}/readyz")
            for c in self.components()
        ]
        specs += [
            (
                f"relay-{s}",
                ["relay", "--service", s],
                f"http://{self.settings.metrics_host}:{self.settings.port_of(f'{s}_relay')}/readyz",
            )
            for s in RELAYED
        ]
        return specs

    def check_layout(self) -> None:
        """A data folder keeps the layout it was made with: its databases in `pg/` (one server) or in
        `pg-<service>/` (`--cluster`); neither layout would see the other's data."""
        made_as_cluster = (self.data_dir / "pg-order").exists()
        made_as_one = (self.data_dir / "pg").exists()
        wanted = self.settings.cluster
        if (wanted and made_as_one) or (not wanted and made_as_cluster and not self.settings.external):
            made, other = (
                ("one PostgreSQL server", "with --cluster") if wanted else ("--cluster", "without it")
            )
            raise StartError(
                f"{self.data_dir} holds the data of a system run with {made}: "
                f"give another --data-dir to run one {other}"
            )

    def start(self) -> None:
        self.check_layout()
        self.check_ports()
        # Secrets the services share (the back office and auth; every service and auth), made before any.
        read_or_create(self.settings.client_address_key)
        read_or_create(self.settings.service_key)
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        ) as progress:
            if not self.settings.external:
                self._step(progress, "PostgreSQL (embedded)", self._start_postgres)
                self._step(progress, "database roles, migrations and grants", self._provision)
                self._step(progress, "NATS JetStream (embedded)", self._start_nats)
            else:
                self.database_urls = self._configured_databases()
            self._step(progress, "broker streams and consumers (as the operator)", self._create_topology)
            for group in self.start_groups():
                names = ", ".join(name for name, _, _ in group)
                self._step(progress, names, partial(self._start_children, group))

    def _step(self, progress: Progress, what: str, action: Callable[[], None]) -> None:
        task = progress.add_task(f"starting {what}", total=1)
        action()
        progress.update(task, completed=1, description=f"[green]✓[/] {what}")

    def _start_postgres(self) -> None:
        self.postgres = EmbeddedPostgres(self.data_dir, self.settings.pg_port, self.settings.host)
        self.postgres.start()

    def _provision(self) -> None:
        assert self.postgres is not None
        self.database_urls = provision(self.postgres.url(), self.settings.secrets_dir)

    def _configured_databases(self) -> dict[str, str]:
        try:
            return {c.name: self.settings.database_url(c.name) for c in connections()}
        except RuntimeError as exc:
            raise StartError(f"{exc} (`oms db provision` makes the roles and prints every URL)") from None

    def database_env(self, child: str) -> dict[str, str]:
        """The database URLs `child` is given: only its own roles' (docs/decisions/010)."""
        return {env_name(name): self.database_urls[name] for name in connections_of(child)}

    def _start_nats(self) -> None:
        s = self.settings
        self.nats = EmbeddedNats(
            self.data_dir,
            s.nats_port,
            s.host,
            s.nats_sync_interval,
            monitor_port=s.nats_monitor_port,
            identities=identities_dir(s),
        )
        self.nats.start()

    def broker_access(self, identity: str) -> NatsAccess:
        """`identity`'s way into the broker: the embedded server's kept identity, or (`--external`) the
        one configured for it; StartError when it has none."""
        if self.nats is not None:
            return self.nats.access(identity)
        try:
            own = access_for if identity == OPERATOR else kept_access
            return own(self.settings, identity)
        except NatsConfigError as exc:
            raise StartError(str(exc)) from None

    def _create_topology(self) -> None:
        """The streams and durable consumers, created by the operator before anything uses them (no
        service or relay may create them)."""
        operator = self.broker_access(OPERATOR)
        try:
            asyncio.run(asyncio.wait_for(create_topology(operator, self.settings.stream_replicas), 60))
        except Exception as exc:
            raise StartError(f"cannot create the broker's streams as the operator: {exc}") from None

    def _recreate_topology(self) -> None:
        """After a restart of NATS, in case its store was lost with it; the services wait meanwhile."""
        try:
            self._create_topology()
        except StartError as exc:
            self.console.print(f"[red]{exc}")

    def broker_env(self, child: str) -> dict[str, str]:
        """The child's own broker identity, and nothing of the others' (auth uses no broker)."""
        return self.broker_access(child).env() if child in IDENTITIES else {}

    def child_env(self) -> dict[str, str]:
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("OMS_")}
        env.update(
            {
                "OMS_DATA_DIR": str(self.data_dir),
                "OMS_HOST": s.host,
                "OMS_AUTH_URL": f"http://{s.host}:{s.auth_port}",
                "OMS_EXECUTION": s.execution.value,
                "OMS_CUSTOMER_DEPOSITS": s.customer_deposits.value,
                "OMS_WITHDRAWAL_APPROVAL_THRESHOLD": str(s.withdrawal_approval_threshold),
                "OMS_LOG_FORMAT": "json",
                "OMS_NATS_URL": self.nats.url if self.nats else s.nats_url,
                "OMS_METRICS_HOST": s.metrics_host,
                "OMS_METRICS_CLIENTS": s.metrics_clients,
                # The relays hold acknowledged events according to the broker's disk sync (decision 007).
                "OMS_NATS_SYNC_INTERVAL": s.nats_sync_interval,
                "OMS_ORDER_URL": f"http://{s.host}:{s.order_port}",
                "OMS_ACCOUNT_URL": f"http://{s.host}:{s.account_port}",
                "OMS_MARKET_URL": f"http://{s.host}:{s.market_port}",
            }
        )
        for component in [*self.components(), *(f"{r}_relay" for r in RELAYED)]:
            env[port_env_name(component)] = str(s.port_of(component))
        if s.relay_confirm_delay is not None:
            env["OMS_RELAY_CONFIRM_DELAY"] = str(s.relay_confirm_delay)
        username, password, _ = admin_credentials(s)
        env["OMS_ADMIN_USERNAME"], env["OMS_ADMIN_PASSWORD"] = username, password
        env.update({f"OMS_{n.upper()}": str(getattr(s, n)) for n in PASSED_ON if n in s.model_fields_set})
        return env

    def _start_children(self, specs: list[ChildSpec]) -> None:
        """Start these children together, then wait until each is healthy."""
        env = self.child_env()
        started = []
        for name, args, health_url in specs:
            child = Child(
                name=name,
                argv=[sys.executable, "-m", "oms", "serve", *args],
                env={
                    **env,
                    **self.database_env(self.component_of(name)),
                    **self.broker_env(self.component_of(name)),
                },
                log_file=self.data_dir / "logs" / f"{name}.log",
                health_url=health_url,
            )
            child.start()
            self.children.append(child)
            started.append(child)
        for child in started:
            child.wait_healthy()

    def component_of(self, child: str) -> str:
        """What a child runs (a replica `order-2` runs `order`)."""
        return child

    # -- run -------------------------------------------------------------------------------------
    def watch(self, poll_seconds: float = 0.5) -> None:
        """Restart whatever dies, with backoff, until asked to stop."""
        while True:
            time.sleep(poll_seconds)
            self._revive_servers()
            for child in self.children:
                self._revive(child)

    def servers(self) -> list[tuple[str, EmbeddedPostgres | EmbeddedNats | None]]:
        """The embedded servers, by name: the broker's before the databases' (they stop in this order)."""
        return [("NATS", self.nats), ("PostgreSQL", self.postgres)]

    def _revive_servers(self) -> None:
        """Restart a dead PostgreSQL or NATS; a restart that fails is tried again later, with backoff,
        while the services keep running (they reconnect once it is back)."""
        now = time.monotonic()
        for name, server in self.servers():
            if server is None or server.process is None or server.process.poll() is None:
                continue
            if now < self.server_retry_at.get(name, 0.0):
                continue
            self.console.print(f"[red]{name} exited with code {server.process.returncode}; restarting")
            try:
                server.start()
            except (PostgresError, NatsError, OSError) as exc:
                failures = self.server_failures.get(name, 0) + 1
                self.server_failures[name] = failures
                delay = min(2 ** (failures - 1), 30)
                self.server_retry_at[name] = now + delay
                self.console.print(f"[red]{name} did not start ({exc}); trying again in {delay}s")
            else:
                self.server_failures.pop(name, None)
                self.server_retry_at.pop(name, None)
                if isinstance(server, EmbeddedNats):
                    self._recreate_topology()

    def _revive(self, child: Child) -> None:
        if child.process is None or child.process.poll() is None:
            return
        now = time.monotonic()
        if child.next_restart == 0.0:
            child.crashes = [t for t in child.crashes if now - t < 60] + [now]
            delay = min(2 ** (len(child.crashes) - 1), 30)
            child.next_restart = now + delay
            self.console.print(
                f"[red]{child.name} exited with code {child.process.returncode}; "
                f"restarting in {delay}s (log: {child.log_file})"
            )
        elif now >= child.next_restart:
            child.next_restart = 0.0
            child.start()

    # -- stop ------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Services first (newest first), then the broker, then the database."""
        for child in reversed(self.children):
            if child.process is not None:
                stop(child.process)
        for _, server in self.servers():
            if server is not None:
                server.stop()

    def places(self) -> list[tuple[str, str]]:
        """What runs where, as `oms up` shows it once everything is ready."""
        s = self.settings
        found = []
        for component in self.components():
            note = "web back office" if component == "backoffice" else "API docs: /docs"
            found.append((component, f"http://{s.host}:{s.port_of(component)}  ({note})"))
        if self.postgres:
            databases = ", ".join(SERVICES)
            found.append(("PostgreSQL", f"{s.host}:{self.postgres.port} (databases {databases})"))
        if self.nats:
            monitor = self.nats.monitor_url
            watched = f"; unauthenticated monitoring on {monitor}" if monitor else ""
            found.append(("NATS", f"{self.nats.url} (identities in {self.nats.identities}{watched})"))
        relays = ", ".join(f"{r} http://{s.metrics_host}:{s.port_of(f'{r}_relay')}" for r in RELAYED)
        found.append(("relays", f"{relays} (/metrics, /livez, /readyz)"))
        return found

    def state(self) -> dict[str, object]:
        """What commands on this data folder learn of the running system (run/state.json)."""
        return {
            "pid": os.getpid(),
            "pg_port": self.postgres.port if self.postgres else None,
            "nats_url": self.nats.url if self.nats else self.settings.nats_url,
            "urls": {c: f"http://{self.settings.host}:{self.settings.port_of(c)}" for c in self.components()},
            # What `oms audit` checks the orders against, whatever its own environment says.
            "execution": self.settings.execution.value,
            "market_close": self.settings.market_close,
        }

    def write_state(self) -> None:
        (self.data_dir / "run" / "state.json").write_text(json.dumps(self.state(), indent=2))


def _raise_stop(signum: int, _frame: object) -> None:
    raise StopRequested(signum)


def run(settings: Settings, console: Console) -> None:
    """Start everything, print how to use it, supervise until SIGINT/SIGTERM, then stop everything."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.cluster:
        from oms.runtime.cluster import ClusterSystem

        system: System = ClusterSystem(settings, console)
    else:
        system = System(settings, console)
    with exclusive(settings.data_dir):
        previous = signal.signal(signal.SIGTERM, _raise_stop)
        # Started in the background by a shell without job control, SIGINT arrives ignored (and Python then
        # raises no KeyboardInterrupt): Ctrl-C's signal must stop it all the same.
        signal.signal(signal.SIGINT, _raise_stop)
        try:
            system.start()
            system.write_state()
            _welcome(system, console)
            system.watch()
        except (KeyboardInterrupt, StopRequested):
            console.print("stopping…")
        finally:
            # A second Ctrl-C must not leave children behind half-way through the stop.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            system.stop()
            (settings.data_dir / "run" / "state.json").unlink(missing_ok=True)
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, signal.default_int_handler)
        console.print("stopped")


def _welcome(system: System, console: Console) -> None:
    s = system.settings
    username, password, generated = admin_credentials(s)
    console.print()
    for what, where in system.places():
        console.print(f"  {what:<11} {where}", highlight=False)
    # Never the whole password: this output is often kept in a log file.
    if generated:
        kept = s.secrets_dir.resolve() / "admin-password"
        shown = f"{password[:3]}…{password[-2:]} (the whole password is in {kept})"
    else:
        shown = "(the password in OMS_ADMIN_PASSWORD)"
    console.print(f"\n  Admin login: [bold]{username}[/] / {shown}", highlight=False)
    console.print(
        f"  e.g. curl -s -X POST http://{s.host}:{s.auth_port}/login -H 'Content-Type: application/json' "
        f'-d \'{{"username": "{username}", "password": "…"}}\''
    )
    console.print(
        f"  Data in {system.data_dir}; logs in {system.data_dir / 'logs'}. Ctrl-C stops everything.\n"
    )
    console.print("[bold green]ready")
