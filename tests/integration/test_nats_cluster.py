"""Three embedded NATS servers in one JetStream cluster (runtime/nats.py ClusterNode), as `oms up --cluster`
runs them: the same identities as a single server, the streams and durable consumers created R3, and a
publisher that retries with the same message id through the election that follows the loss of the stream's
leader stores each message once."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from oms.kernel.broker import JetStreamBroker, Outgoing, create_topology
from oms.kernel.nats_access import NatsAccess, connect_nats
from oms.kernel.permissions import OPERATOR
from oms.kernel.topology import CONSUMERS, EVENTS_STREAM
from oms.runtime.nats import ClusterNode, EmbeddedNats
from oms.runtime.ports import free_port


def cluster_of(data_dir: Path, size: int = 3) -> list[EmbeddedNats]:
    routes = [free_port() for _ in range(size)]
    return [
        EmbeddedNats(
            data_dir,
            free_port(),
            node=ClusterNode(
                name=f"nats-{n + 1}",
                route_port=routes[n],
                peer_route_ports=tuple(p for p in routes if p != routes[n]),
                route_password="route-secret",
            ),
        )
        for n in range(size)
    ]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[EmbeddedNats]]:
    servers = cluster_of(tmp_path_factory.mktemp("cluster"))
    for server in servers:
        server.launch()
    try:
        for server in servers:
            server.wait_ready(60)
        yield servers
    finally:
        for server in servers:
            server.stop()


def access(nodes: list[EmbeddedNats], identity: str) -> NatsAccess:
    return nodes[0].access(identity).with_servers(",".join(n.url for n in nodes))


async def stream_info(nodes: list[EmbeddedNats]) -> object:
    nc = await connect_nats(access(nodes, OPERATOR), once=True)
    try:
        return await nc.jetstream(timeout=5).stream_info(EVENTS_STREAM)
    finally:
        await nc.close()


def test_each_node_has_its_name_its_routes_and_a_password_only_it_keeps(nodes: list[EmbeddedNats]) -> None:
    config = nodes[0].config_file.read_text()
    assert 'server_name: "nats-1"' in config
    assert all(f"route-secret@127.0.0.1:{n.node.route_port}" in config for n in nodes[1:] if n.node)
    assert nodes[0].config_file.stat().st_mode & 0o077 == 0


async def test_streams_and_durable_consumers_are_created_with_three_replicas(
    nodes: list[EmbeddedNats],
) -> None:
    for attempt in range(20):  # the cluster's meta leader may still be being elected
        try:
            await create_topology(access(nodes, OPERATOR), replicas=3)
            break
        except Exception:
            if attempt == 19:
                raise
            await asyncio.sleep(0.5)
    info = await stream_info(nodes)
    assert info.config.num_replicas == 3  # type: ignore[attr-defined]
    assert len(info.cluster.replicas) == 2  # type: ignore[attr-defined]
    nc = await connect_nats(access(nodes, OPERATOR), once=True)
    try:
        for consumer in CONSUMERS:
            found = await nc.jetstream().consumer_info(EVENTS_STREAM, consumer)
            assert found.config.num_replicas == 3
    finally:
        await nc.close()


async def test_a_publish_retried_through_the_loss_of_the_leader_is_stored_once(
    nodes: list[EmbeddedNats],
) -> None:
    await create_topology(access(nodes, OPERATOR), replicas=3)
    before = (await stream_info(nodes)).state.messages  # type: ignore[attr-defined]
    leader_name = (await stream_info(nodes)).cluster.leader  # type: ignore[attr-defined]
    leader = next(n for n in nodes if n.name == leader_name)
    producer = next(iter(CONSUMERS.values())).subjects.replace(">", "test")
    broker = await JetStreamBroker.connect(access(nodes, OPERATOR))
    try:
        first = [Outgoing(producer, b"{}", f"cluster-test-{i}") for i in range(50)]
        await broker.publish(first)
        assert leader.process is not None
        leader.process.send_signal(signal.SIGKILL)
        leader.process.wait(10)
        # The same messages again and 50 more, while the others elect a new leader: acknowledged in the end.
        again = [*first, *(Outgoing(producer, b"{}", f"cluster-test-{i}") for i in range(50, 100))]
        await asyncio.wait_for(broker.publish(again), 60)
    finally:
        await broker.close()
        leader.start(60)
    info = await stream_info(nodes)
    assert info.state.messages == before + 100  # type: ignore[attr-defined]
    assert info.cluster.leader  # type: ignore[attr-defined]
