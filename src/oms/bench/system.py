"""The system under test: a fresh `oms up` in a temporary data folder on free ports, or one already running.

Everything the bench and the chaos suite need to reach it is in `Target`: the service URLs, the admin login,
the PostgreSQL server (for pgbench and for reading outcomes from the order and account databases), the
broker, and the process tree (for CPU and memory figures).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import psutil

from oms.kernel.nats_access import NatsAccess, NatsConfigError, kept_access
from oms.kernel.permissions import MARKET, OPERATOR
from oms.kernel.settings import Settings
from oms.runtime.ports import free_port_env

ADMIN_USERNAME = "bench-admin"
ADMIN_PASSWORD = "bench-admin-password"  # a throw-away system's; never a real one's


def component_of(name: str) -> str:
    """`order` of a cluster's replica `order-2`, `relay-order` of `relay-order-1`; a single node's role is its
    own."""
    head, _, number = name.rpartition("-")
    return head if head and number.isdigit() else name


class TargetError(RuntimeError):
    """The system under test could not be started or reached."""


@dataclass
class Target:
    """Where the system under test is and how to log in to it."""

    urls: dict[str, str]  # auth, order, account, market (when known) → base URL
    admin: tuple[str, str]
    pg_host: str | None = None
    pg_port: int | None = None  # the PostgreSQL server of every database (single node)
    pg_ports: dict[str, int] = field(default_factory=dict)  # a cluster's: each service's database's server
    pg_user: str = "oms"
    pg_password: str | None = None
    nats: NatsAccess | None = None  # the operator's access to its broker
    market_feed: NatsAccess | None = None  # the market feed's identity: to publish quotes as the feed does
    root_pid: int | None = None  # `oms up` (its descendants are the system's processes)
    # A cluster's children by name (`order-1`, `relay-account-2`): the port each answers on alone (a
    # service replica's own port beside the shared one, a relay's probes and metrics).
    replicas: dict[str, int] = field(default_factory=dict)

    @property
    def cluster(self) -> bool:
        return bool(self.replicas)

    def port_of_database(self, database: str) -> int | None:
        return self.pg_ports.get(database, self.pg_port)

    def database_url(self, database: str, *, server: str | None = None) -> str | None:
        """`database` on its service's server, or on the server of the service `server` (a scratch database
        the bench creates: in a cluster it needs a server to live on)."""
        port = self.port_of_database(server or database)
        if port is None or self.pg_password is None:
            return None
        password = quote(self.pg_password)
        return f"postgresql://{self.pg_user}:{password}@{self.pg_host}:{port}/{database}"

    def replica_urls(self, component: str) -> list[str]:
        """Where each replica of `component` answers alone (a single node's: its one URL)."""
        host = urlsplit(self.urls[component]).hostname or "127.0.0.1"
        ports = [port for name, port in sorted(self.replicas.items()) if component_of(name) == component]
        return [f"http://{host}:{port}" for port in ports] or [self.urls[component]]

    @property
    def has_database(self) -> bool:
        return self.database_url("order") is not None

    def processes(self) -> list[psutil.Process]:
        """Every process of the system (the supervisor and all its descendants) alive now."""
        if self.root_pid is None:
            return []
        try:
            root = psutil.Process(self.root_pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


def attach(data_dir: Path | None, urls: dict[str, str], admin: tuple[str, str]) -> Target:
    """A running system: its URLs, and — given its data folder — its databases, broker and processes."""
    target = Target(urls=urls, admin=admin)
    if data_dir is None:
        return target
    state_file = data_dir / "run" / "state.json"
    if not state_file.exists():
        raise TargetError(f"no running system in {data_dir} (no run/state.json)")
    state = json.loads(state_file.read_text())
    target.root_pid = int(state["pid"])
    if state.get("nats_url"):
        settings = Settings(data_dir=data_dir)
        target.nats = kept_access(settings, OPERATOR).with_servers(str(state["nats_url"]))
        with contextlib.suppress(NatsConfigError):
            target.market_feed = kept_access(settings, MARKET).with_servers(str(state["nats_url"]))
    if state.get("pg_port") or state.get("pg_ports"):
        target.pg_host = urlsplit(urls["order"]).hostname or "127.0.0.1"
        target.pg_port = int(state["pg_port"]) if state.get("pg_port") else None
        target.pg_ports = {str(k): int(v) for k, v in (state.get("pg_ports") or {}).items()}
        target.pg_password = (data_dir / "secrets" / "pg-password").read_text().strip()
    target.replicas = {str(k): int(v) for k, v in (state.get("children") or {}).items()}
    return target


@dataclass
class LaunchedSystem:
    """`oms up` as a child process of ours, in `data_dir`, on free ports."""

    data_dir: Path
    execution: str = "immediate"
    extra_env: dict[str, str] = field(default_factory=dict)
    cluster: bool = False  # `oms up --cluster`
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def start(self, timeout: float | None = None, attempts: int = 3) -> Target:
        """Start it and wait for "ready"; a free port taken by someone else meanwhile means a new try."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(timeout or (300.0 if self.cluster else 120.0))
            except TargetError as exc:
                if "cannot bind port" not in str(exc) or attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> Target:
        self.output = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OMS_")}
        ports = free_port_env()
        self.env.update(ports)
        self.env.update(
            {
                "OMS_ADMIN_USERNAME": ADMIN_USERNAME,
                "OMS_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "OMS_EXECUTION": self.execution,
                **self.extra_env,
            }
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "oms", "up", "--data-dir", str(self.data_dir)]
            + (["--cluster"] if self.cluster else []),
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not any(line.strip() == "ready" for line in self.output):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise TargetError("oms up did not become ready:\n" + "".join(self.output[-30:]))
            time.sleep(0.1)
        components = ("auth", "order", "account", "market")
        urls = {c: f"http://127.0.0.1:{ports[f'OMS_{c.upper()}_PORT']}" for c in components}
        return attach(self.data_dir, urls, (ADMIN_USERNAME, ADMIN_PASSWORD))

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.output.append(line)

    def stop(self) -> None:
        """Ctrl-C, as a user stops it; killed if it does not stop within a minute."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(2)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
