"""`oms up --cluster`: the layout of real hosts on one machine (SPEC §5). The seed flows through the shared
ports of two replicas each; then, while a few hundred orders stream in, one replica of every service, the
active relays, the market replica whose feed quotes and the NATS server leading the events stream are killed
with SIGKILL. Nothing may be lost or doubled, and `oms audit` must be clean.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import psutil
import pytest

from oms.kernel.market import MARKET_STREAM
from oms.kernel.nats_access import NatsAccess, connect_nats
from oms.kernel.topology import EVENTS_STREAM
from oms.runtime.nats import EmbeddedNats
from oms.runtime.ports import PortUnavailable, check_bindable
from oms.runtime.postgres import EmbeddedPostgres
from tests.conftest import execute
from tests.e2e.api import Api
from tests.e2e.conftest import RunningSystem, system_env
from tests.e2e.test_crash import (
    ASSETS,
    Stream,
    check_outcome,
    component,
    make_customers,
    place,
    random_orders,
    wait_restarted,
)

pytestmark = [pytest.mark.e2e, pytest.mark.long]

ORDERS = 300
SERVICES = ("auth", "order", "account", "market", "backoffice")


def below_ephemeral_ports(env: dict[str, str]) -> dict[str, str]:
    """Every port setting of `env` moved to free ports below the kernel's ephemeral range (32768 on): the
    cluster's 20-odd processes open many connections while it starts, and one of them could otherwise get a
    port a replica is about to bind as its local port."""
    port = random.randrange(20_000, 30_000)
    names = sorted(
        (k for k in env if k.startswith("OMS_") and k.endswith("_PORT")), key="OMS_CLUSTER_BASE_PORT".__eq__
    )
    for name in names:  # the cluster's base last: its ports are the first free ones above the others
        while True:
            port += 1
            try:
                check_bindable("127.0.0.1", port, name, name)
            except PortUnavailable:
                continue
            env[name] = str(port)
            break
    return env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    running = RunningSystem(tmp_path_factory.mktemp("oms") / "data", below_ephemeral_ports(system_env()))
    running.start("--cluster", timeout=300)
    yield running
    if running.process is not None:
        running.stop()


@pytest.fixture(scope="module")
def api(cluster: RunningSystem) -> Iterator[Api]:
    yield Api(cluster)


def state(system: RunningSystem) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((system.data_dir / "run" / "state.json").read_text())
    return loaded


def operator(system: RunningSystem) -> NatsAccess:
    """The operator's way into all three NATS servers."""
    nodes = state(system)["nats_url"]
    return (
        EmbeddedNats(system.data_dir, int(system.env["OMS_NATS_PORT"])).access("operator").with_servers(nodes)
    )


async def _stream_info(access: NatsAccess, stream: str) -> Any:
    nc = await connect_nats(access, once=True)
    try:
        return await nc.jetstream(timeout=5).stream_info(stream)
    finally:
        await nc.close()


def stream_info(system: RunningSystem, stream: str) -> Any:
    return asyncio.run(_stream_info(operator(system), stream))


def replica_tail(system: RunningSystem, name: str) -> tuple[str, ...]:
    """The end of the command line of child `name` (`order-1`, `relay-order-2`) of `oms up --cluster`."""
    port = str(state(system)["children"][name])
    what = name.rsplit("-", 1)[0]
    if what.startswith("relay-"):
        return ("serve", "relay", "--service", what.removeprefix("relay-"), "--port", port)
    return ("serve", what, "--reuse-port", "--replica-port", port)


def nats_tail(system: RunningSystem, server: str) -> tuple[str, ...]:
    return ("--config", str(system.data_dir.resolve() / "nats" / server / "nats.conf"))


def active_relay(system: RunningSystem, service: str) -> str:
    """The relay of `service` that streams its slot now (the only ready one)."""
    deadline = time.monotonic() + 30
    while True:
        for n in (1, 2):
            port = state(system)["children"][f"relay-{service}-{n}"]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    return f"relay-{service}-{n}"
            except httpx.HTTPError:
                pass
        assert time.monotonic() < deadline, f"no relay of {service} is ready"
        time.sleep(0.2)


def standby(replica: str) -> str:
    """The other one of a pair: `relay-order-2` for `relay-order-1`."""
    name, number = replica.rsplit("-", 1)
    return f"{name}-{3 - int(number)}"


def quoting_market(system: RunningSystem) -> str:
    """The market replica whose feed quotes (the one that has said it goes on from the broker's quotes)."""
    logs = {n: (system.data_dir / "logs" / f"market-{n}.log").read_text() for n in (1, 2)}
    quoting = [n for n, text in logs.items() if "the feed goes on from" in text]
    assert len(quoting) == 1, logs
    return f"market-{quoting[0]}"


def kill(system: RunningSystem, tail: tuple[str, ...]) -> int:
    process = component(system, tail)
    assert process is not None, f"no {' '.join(tail)} running"
    process.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(process):  # dead once a zombie: the supervisor reaps it when it next looks
        assert time.monotonic() < deadline, f"{' '.join(tail)} survived SIGKILL"
        time.sleep(0.05)
    return process.pid


def replica_requests(port: int) -> float:
    """HTTP requests the replica on its own `port` has answered (its /metrics)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(float(m) for m in re.findall(r"^oms_http_requests_total\{[^}]*\} ([0-9.e+]+)$", text, re.M))


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def feed_locks(system: RunningSystem) -> int:
    """Feed locks held in the market database (market/turn.py): one while a replica quotes."""
    server = EmbeddedPostgres(system.data_dir, state(system)["pg_ports"]["market"], name="market")
    rows = execute(
        server.url("market"),
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = 'market'",
    )
    return int(str(rows[0][0]))


# --- the tests ----------------------------------------------------------------------------------------------


def test_the_layout_runs_and_the_seed_flows_work_through_the_shared_ports(
    api: Api, cluster: RunningSystem
) -> None:
    output = "".join(cluster.output)
    for service in SERVICES:
        assert re.search(rf"^  {service} +http://127\.0\.0\.1:\d+ .*2 replicas", output, re.M), output
    running = state(cluster)
    assert len(set(running["pg_ports"].values())) == 4  # a PostgreSQL server per service
    assert len(running["nats_url"].split(",")) == 3
    for stream in (EVENTS_STREAM, MARKET_STREAM):
        info = stream_info(cluster, stream)
        assert info.config.num_replicas == 3
        assert info.cluster.leader and len(info.cluster.replicas) == 2
    assert feed_locks(cluster) == 1  # one market replica quotes, the other stands by

    # The seed flow: a customer funded by the admin buys at the market's price, the rest of what the limit
    # reserved comes back.
    admin = api.admin()
    customer = api.customer()
    assert api.deposit(admin, customer, "TRY", "100000").status_code == 200
    price = api.marketable(customer, "BUY")
    order = api.wait_order(customer, api.place(customer, "BUY", "AAPL", 2, price))
    assert order["status"] == "MATCHED", order
    executed = Decimal(str(order["executedPrice"]))
    assert executed <= Decimal(price)
    spent = 2 * executed
    assert api.wait_balances(admin, customer, {"TRY": (100000 - spent, 100000 - spent), "AAPL": (2, 2)}) == {
        "TRY": (100000 - spent, 100000 - spent),
        "AAPL": (Decimal(2), Decimal(2)),
    }

    # The kernel spreads new connections over both replicas of a service.
    ports = [running["children"][f"order-{n}"] for n in (1, 2)]
    before = [replica_requests(p) for p in ports]
    for _ in range(40):
        assert httpx.get(api.url("order", "/api/v1/orders"), headers=customer.headers).status_code == 200
    after = [replica_requests(p) for p in ports]
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)


def test_killing_a_replica_of_each_service_the_active_relays_the_feed_and_the_stream_leader_loses_nothing(
    api: Api, cluster: RunningSystem
) -> None:
    admin = api.admin()
    quotes = {asset: api.quote(admin, asset) for asset in ASSETS}
    run = Stream(make_customers(api, admin), random_orders(7, quotes, ORDERS))
    sequence_before = api.quote(admin, "AAPL")["sequence"]
    leader = stream_info(cluster, EVENTS_STREAM).cluster.leader
    feeding = quoting_market(cluster)
    relays = {s: active_relay(cluster, s) for s in ("order", "account")}
    victims = {
        40: [replica_tail(cluster, f"{s}-1") for s in ("auth", "order", "account", "backoffice")],
        100: [replica_tail(cluster, relay) for relay in relays.values()],
        160: [nats_tail(cluster, leader)],
        220: [replica_tail(cluster, feeding)],
    }

    killed: dict[tuple[str, ...], int] = {}
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(place, api, run, order, f"cluster-{i}") for i, order in enumerate(run.orders)]
        pending = dict(sorted(victims.items()))
        while pending:
            at = next(iter(pending))
            if sum(f.done() for f in futures) >= at:
                for tail in pending.pop(at):
                    killed[tail] = kill(cluster, tail)
                if at == 100:  # each standby relay takes the slot before its active one is restarted
                    assert {s: active_relay(cluster, s) for s in relays} == {
                        s: standby(relay) for s, relay in relays.items()
                    }
            time.sleep(0.01)
        for future in futures:
            future.result()
    for tail, pid in killed.items():
        wait_restarted(cluster, tail, pid, timeout=60)
    sequence_after_kills = api.quote(admin, "AAPL")["sequence"]

    check_outcome(api, cluster, run, timeout=90)
    output = "".join(cluster.output)
    for name in ("auth-1", "order-1", "account-1", "backoffice-1", leader):
        assert f"{name} exited with code -9" in output, output[-3000:]
    assert stream_info(cluster, EVENTS_STREAM).cluster.leader  # a leader again, with its replicas

    # The standby feed took over where the killed one stopped: quotes go on, in sequence.
    taker = standby(feeding)
    assert "the feed goes on from" in (cluster.data_dir / "logs" / f"{taker}.log").read_text()
    assert sequence_after_kills >= sequence_before
    assert feed_locks(cluster) == 1  # one feed quotes, the restarted replica stands by
    deadline = time.monotonic() + 30
    while api.quote(admin, "AAPL")["sequence"] <= sequence_after_kills:
        assert time.monotonic() < deadline, "no new quote after the feed's takeover"
        time.sleep(0.2)


def test_ctrl_c_stops_every_process_of_the_cluster(cluster: RunningSystem) -> None:
    assert cluster.process is not None
    started = psutil.Process(cluster.process.pid).children(recursive=True)
    assert len(started) >= 3 + 4 + 10 + 4  # NATS, PostgreSQL, service replicas, relays (and their children)
    assert cluster.stop() == 0
    assert not [p for p in started if alive(p)], started
    assert "stopped" in "".join(cluster.output)
