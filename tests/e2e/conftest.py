"""`oms up` as a user runs it: a real subprocess with its own data folder and free ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from playwright.sync_api import Browser, sync_playwright

from oms.kernel.nats_access import NatsAccess
from oms.runtime.nats import EmbeddedNats
from oms.runtime.ports import free_port_env
from tests.e2e.desk import CHROMIUM, CHROMIUM_ARGS


@dataclass
class RunningSystem:
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    descendants: list[psutil.Process] = field(default_factory=list)

    def url(self, component: str) -> str:
        return f"http://127.0.0.1:{self.env[f'OMS_{component.upper()}_PORT']}"

    def broker_access(self, identity: str) -> NatsAccess:
        """`identity`'s credentials on this system's NATS server, as `oms up` generated them."""
        return EmbeddedNats(self.data_dir, int(self.env["OMS_NATS_PORT"])).access(identity)

    def start(self, *args: str, timeout: float = 90.0, background: bool = False) -> None:
        """`oms up ARGS` until it prints "ready"; `background`: with SIGINT ignored, as a shell without job
        control starts `oms up &`."""
        self.output = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "oms", "up", "--data-dir", str(self.data_dir), *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=_as_background_job if background else None,
        )
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not any(line.strip() == "ready" for line in self.output):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                pytest.fail("oms up did not become ready:\n" + "".join(self.output))
            time.sleep(0.1)
        self.descendants = psutil.Process(self.process.pid).children(recursive=True)

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.output.append(line)

    def stop(self, sig: int = signal.SIGINT) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(60)
        self.process = None
        return code

    def leftovers(self) -> list[psutil.Process]:
        """Processes started by this system that are still alive."""
        return [p for p in self.descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _as_background_job() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)


def system_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMS_")}
    env.update(
        {
            **free_port_env(),
            "OMS_ADMIN_USERNAME": "boss",
            "OMS_ADMIN_PASSWORD": "boss-password",
            # The tests register their customers from one address, far more than a person would.
            "OMS_REGISTER_ADDRESS_MAX_ATTEMPTS": "100000",
            **extra,
        }
    )
    return env


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    running = RunningSystem(tmp_path_factory.mktemp("oms") / "data", system_env())
    running.start()
    yield running
    if running.process is not None:
        running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, driven by playwright (never `playwright install`); one per test module."""
    if not CHROMIUM.exists():
        pytest.skip("browser tests need Debian's Chromium at /usr/bin/chromium (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()
