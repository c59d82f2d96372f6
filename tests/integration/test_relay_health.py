"""The relay's HTTP port for orchestrators, on servers the tests stop and start again:
/livez answers while the relay lives, /readyz only while it streams from its slot and is connected to NATS —
not while PostgreSQL or NATS is away, nor as a standby while another relay holds the slot — and /metrics
still serves Prometheus's text."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from oms.kernel import outbox
from oms.kernel.permissions import OPERATOR
from oms.kernel.relay import run_relay
from oms.kernel.topology import slot_name
from oms.runtime.nats import EmbeddedNats
from oms.runtime.ports import free_port
from oms.runtime.postgres import EmbeddedPostgres
from tests.conftest import execute

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def database(private_pg: EmbeddedPostgres) -> tuple[str, str]:
    """(service, URL) of a database as a service's migrations leave it."""
    service = f"h{uuid.uuid4().hex[:10]}"
    private_pg.create_databases([service])
    url = private_pg.url(service)
    execute(url, outbox.OUTBOX_DDL + outbox.RELAY_SLOTS_DDL + outbox.PUBLICATION_DDL)
    return service, url


@dataclass
class ProbedRelay:
    """`run_relay` in a thread with its metrics port, as `oms serve relay` runs it."""

    service: str
    url: str
    nats: EmbeddedNats
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> ProbedRelay:
        args = (self.service, self.url, self.nats.access(OPERATOR), self.stop, self.port)
        kwargs = {"metrics_host": self.host}
        self.thread = threading.Thread(target=run_relay, args=args, kwargs=kwargs, daemon=True)
        self.thread.start()
        return self

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://{self.host}:{self.port}{path}", timeout=3)

    def halt(self) -> None:
        if self.thread is not None:
            self.stop.set()
            self.thread.join(timeout=30)
            assert not self.thread.is_alive()


@pytest.fixture
def relays(database: tuple[str, str], private_nats: EmbeddedNats) -> Iterator[Callable[..., ProbedRelay]]:
    """Start a relay of the test's database (`host`: where its port listens)."""
    started: list[ProbedRelay] = []

    def start(host: str = "127.0.0.1") -> ProbedRelay:
        started.append(ProbedRelay(*database, private_nats, host).start())
        return started[-1]

    yield start
    for relay in started:
        relay.halt()


def until(check: Callable[[], bool], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.1)


def ready(relay: ProbedRelay) -> bool:
    return relay.get("/readyz").status_code == 200


def test_a_streaming_relay_is_live_and_ready_and_serves_its_metrics(
    relays: Callable[[], ProbedRelay],
) -> None:
    relay = relays()
    until(lambda: ready(relay), "the relay is ready")
    assert relay.get("/readyz").json() == {"status": "ok", "checks": {"slot": "ok", "broker": "ok"}}
    assert relay.get("/livez").json() == {"status": "ok"}
    metrics = relay.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert f'oms_relay_lag_bytes{{service="{relay.service}"}}' in metrics.text
    assert relay.get("/").status_code == 404
    assert httpx.post(f"http://{relay.host}:{relay.port}/readyz").status_code == 405


def test_a_relay_without_nats_is_live_but_not_ready_until_nats_is_back(
    relays: Callable[[], ProbedRelay], private_nats: EmbeddedNats
) -> None:
    relay = relays()
    until(lambda: ready(relay), "the relay is ready")
    private_nats.stop()
    try:
        until(lambda: relay.get("/readyz").status_code == 503, "the relay is not ready")
        assert relay.get("/readyz").json()["checks"]["broker"] == "unavailable: not connected"
        assert relay.get("/livez").status_code == 200
    finally:
        private_nats.start()
    until(lambda: ready(relay), "the relay is ready again")


def test_a_relay_without_postgresql_is_live_but_not_ready_until_it_streams_again(
    relays: Callable[[], ProbedRelay], private_pg: EmbeddedPostgres
) -> None:
    relay = relays()
    until(lambda: ready(relay), "the relay is ready")
    private_pg.stop()
    try:
        until(lambda: relay.get("/readyz").status_code == 503, "the relay is not ready")
        slot = relay.get("/readyz").json()["checks"]["slot"]
        assert slot.startswith("unavailable: "), slot
        assert relay.get("/livez").status_code == 200
    finally:
        private_pg.start()
    until(lambda: ready(relay), "the relay streams again", within=60)


def test_a_standby_relay_is_live_but_not_ready_until_it_takes_the_slot_over(
    relays: Callable[[], ProbedRelay],
) -> None:
    active = relays()
    until(lambda: ready(active), "the active relay is ready")
    standby = relays()
    until(lambda: "standing by" in standby.get("/readyz").json()["checks"]["slot"], "the standby stands by")
    assert standby.get("/readyz").status_code == 503
    assert standby.get("/livez").status_code == 200
    active.halt()
    until(lambda: ready(standby), "the standby took the slot over")


def test_the_port_listens_on_the_address_it_is_given(relays: Callable[..., ProbedRelay]) -> None:
    relay = relays(host="127.0.0.2")
    until(lambda: ready(relay), "the relay is ready on 127.0.0.2")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{relay.port}/livez")


def test_oms_serve_relay_listens_where_it_is_told(
    private_pg: EmbeddedPostgres, private_nats: EmbeddedNats, tmp_path: Path
) -> None:
    """`oms serve relay --host … --port …`, as an orchestrator would start it (its own process)."""
    name = f"order_{uuid.uuid4().hex[:8]}"
    private_pg.create_databases([name])
    url = private_pg.url(name)
    execute(url, outbox.OUTBOX_DDL + outbox.RELAY_SLOTS_DDL + outbox.PUBLICATION_DDL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMS_")}
    env |= {
        "OMS_DATA_DIR": str(tmp_path),
        "OMS_ORDER_RELAY_DATABASE_URL": url,
        "OMS_NATS_URL": private_nats.url,
        "OMS_NATS_IDENTITIES_DIR": str(private_nats.identities),
    }
    port = free_port()
    argv = [sys.executable, "-m", "oms", "serve", "relay", "--service", "order", "--host", "127.0.0.3"]
    process = subprocess.Popen([*argv, "--port", str(port)], env=env)
    try:
        until(lambda: httpx.get(f"http://127.0.0.3:{port}/readyz").status_code == 200, "it is ready")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        execute(url, f"SELECT pg_drop_replication_slot('{slot_name('order')}')")
