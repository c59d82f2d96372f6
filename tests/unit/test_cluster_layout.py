"""`oms up --cluster`'s plan (runtime/cluster.py) and the shared ports of its replicas (runtime/ports.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from rich.console import Console

from oms.kernel.settings import Settings
from oms.runtime.cluster import ClusterSystem, Ports
from oms.runtime.databases import NoRunningSystem, database_urls
from oms.runtime.ports import PortUnavailable, bound, free_port, free_port_env
from oms.runtime.supervisor import StartError, System


def test_replicas_share_a_port_only_when_each_asks_for_it() -> None:
    port = free_port()
    first = bound("127.0.0.1", port, "the order service", "OMS_ORDER_PORT", shared=True)
    second = bound("127.0.0.1", port, "the order service", "OMS_ORDER_PORT", shared=True)
    try:
        for sock in (first, second):
            sock.listen()
        with pytest.raises(PortUnavailable, match="OMS_ORDER_PORT"):
            bound("127.0.0.1", port, "the order service", "OMS_ORDER_PORT")
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # the kernel hands the connection to one of them
    finally:
        first.close()
        second.close()


def test_a_port_handed_out_is_never_handed_out_again_though_still_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Picks that start at the same place: before, both got the first free port from there (auth's and the
    # market's ports of one system were once the same).
    monkeypatch.setattr("random.randrange", lambda start, stop: start + 4_321)
    picked = [free_port() for _ in range(50)]
    assert len(set(picked)) == 50
    env = free_port_env()
    assert len(set(env.values())) == len(env)
    assert not set(picked) & {int(port) for port in env.values()}


def test_a_shared_port_held_by_a_process_that_does_not_share_it_is_refused_with_the_setting() -> None:
    port = free_port()
    holder = bound("127.0.0.1", port, "something", "X")
    holder.listen()
    try:
        with pytest.raises(PortUnavailable) as refused:
            bound("127.0.0.1", port, "the order service", "OMS_ORDER_PORT", shared=True)
        assert "does not share it" in str(refused.value) and "OMS_ORDER_PORT=<port>" in str(refused.value)
    finally:
        holder.close()


def test_the_cluster_takes_the_first_free_ports_from_its_base_each_once() -> None:
    busy = bound("127.0.0.1", free_port(), "busy", "X")
    busy.listen()
    try:
        base = busy.getsockname()[1]
        ports = Ports(base)
        taken = [ports.take("127.0.0.1", "a"), ports.take("127.0.0.1", "b")]
        assert base not in taken and len(set(taken)) == 2 and all(p > base for p in taken)
    finally:
        busy.close()


def test_the_cluster_never_takes_a_port_set_for_something_else(tmp_path: Path) -> None:
    base = free_port()
    settings = Settings(data_dir=tmp_path, cluster_base_port=base, order_port=base, market_port=base + 1)
    system = ClusterSystem(settings, Console(quiet=True))
    system.check_ports()
    taken = [*system.replica_ports.values(), *(d.port for d in system.databases.values())]
    assert base not in taken and base + 1 not in taken


@pytest.fixture
def planned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ClusterSystem:
    for name, port in free_port_env().items():
        monkeypatch.setenv(name, port)
    system = ClusterSystem(Settings(data_dir=tmp_path, cluster=True), Console(quiet=True))
    system.check_ports()
    return system


def test_streams_are_replicated_three_times_unless_set(tmp_path: Path) -> None:
    assert ClusterSystem(Settings(data_dir=tmp_path), Console()).settings.stream_replicas == 3
    assert (
        ClusterSystem(Settings(data_dir=tmp_path, stream_replicas=5), Console()).settings.stream_replicas == 5
    )
    with pytest.raises(StartError, match="--external"):
        ClusterSystem(Settings(data_dir=tmp_path, external=True), Console())


def test_the_plan_has_three_nats_servers_four_databases_and_two_of_everything(planned: ClusterSystem) -> None:
    assert [n.name for n in planned.nodes] == ["nats-1", "nats-2", "nats-3"]
    routes = {n.node.route_port for n in planned.nodes if n.node}
    for node in planned.nodes:
        assert node.node is not None and set(node.node.peer_route_ports) == routes - {node.node.route_port}
    assert sorted(planned.databases) == ["account", "auth", "market", "order"]
    ports = [*planned.replica_ports.values(), *(d.port for d in planned.databases.values())]
    assert len(ports) == len(set(ports)) == 10 + 4 + 4  # replicas, relays, databases: each its own port
    assert planned.broker_access("order").servers == tuple(n.url for n in planned.nodes)


def test_second_replicas_start_after_the_first_and_standby_relays_last(planned: ClusterSystem) -> None:
    groups = [[name for name, _, _ in group] for group in planned.start_groups()]
    assert groups == [
        ["auth-1"],
        ["auth-2", "order-1", "account-1", "market-1"],
        ["order-2", "account-2", "market-2", "backoffice-1", "relay-order-1", "relay-account-1"],
        ["backoffice-2", "relay-order-2", "relay-account-2"],
    ]
    specs = {name: (args, probe) for group in planned.start_groups() for name, args, probe in group}
    port = planned.replica_ports["order-2"]
    assert specs["order-2"] == (
        ["order", "--reuse-port", "--replica-port", str(port)],
        f"http://127.0.0.1:{port}/readyz",
    )
    assert specs["relay-order-1"][1] is not None and specs["relay-order-1"][1].endswith("/readyz")
    assert specs["relay-order-2"][1] is not None and specs["relay-order-2"][1].endswith("/livez")
    assert planned.component_of("relay-order-2") == "relay-order"


def test_a_data_folder_keeps_the_layout_it_was_made_with(tmp_path: Path) -> None:
    (tmp_path / "pg").mkdir()
    with pytest.raises(StartError, match="one PostgreSQL server: give another --data-dir"):
        ClusterSystem(Settings(data_dir=tmp_path, cluster=True), Console()).check_layout()
    (tmp_path / "pg").rmdir()
    (tmp_path / "pg-order").mkdir()
    with pytest.raises(StartError, match="--cluster: give another --data-dir to run one without it"):
        System(Settings(data_dir=tmp_path), Console()).check_layout()
    ClusterSystem(Settings(data_dir=tmp_path, cluster=True), Console()).check_layout()


def test_commands_do_not_start_a_single_server_in_a_cluster_folder(tmp_path: Path) -> None:
    (tmp_path / "pg-order").mkdir()
    with (
        pytest.raises(NoRunningSystem, match="--cluster"),
        database_urls(Settings(data_dir=tmp_path), ("auth",)),
    ):
        pass
    assert not (tmp_path / "pg").exists()
