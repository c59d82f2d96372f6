"""Continuous pulling from a durable consumer (oms.kernel.pull) against a real NATS server: what arrives is
handed over at once and in stream order, and pulling goes on after the server restarts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oms.kernel.broker import JetStreamBroker, Outgoing
from oms.kernel.permissions import OPERATOR
from oms.runtime.nats import EmbeddedNats
from oms.runtime.ports import free_port
from tests.integration.conftest import canceled_event


def outgoing(count: int) -> list[Outgoing]:
    events = [canceled_event(f"n{i}") for i in range(count)]
    return [Outgoing(e.subject, e.to_json(), str(e.id)) for e in events]


async def test_fetch_hands_over_what_arrived_in_order_and_at_most_the_batch(broker: JetStreamBroker) -> None:
    messages = outgoing(30)
    await broker.publish(messages)
    taken = []
    started = time.monotonic()
    while len(taken) < 30:
        deliveries = await broker.fetch("account", 12, 2.0)
        assert 0 < len(deliveries) <= 12
        taken += deliveries
        for delivery in deliveries:
            await delivery.ack()
    assert time.monotonic() - started < 2.0  # nothing waited for a timeout: the messages were there
    assert [d.msg_id for d in taken] == [m.msg_id for m in messages]
    assert await broker.fetch("account", 12, 0.3) == []


async def test_fetch_waits_for_the_next_message_and_returns_when_it_arrives(broker: JetStreamBroker) -> None:
    assert await broker.fetch("account", 10, 0.2) == []
    [message] = outgoing(1)
    await broker.publish([message])
    started = time.monotonic()
    [delivery] = await broker.fetch("account", 10, 5.0)
    assert delivery.msg_id == message.msg_id
    assert time.monotonic() - started < 1.0


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path, free_port())
    server.start()
    yield server
    server.stop()


async def test_fetching_goes_on_after_the_server_restarts(own_nats: EmbeddedNats) -> None:
    """The outstanding pull requests die with the server; new ones replace them once the client has
    reconnected and heard nothing for a few heartbeats."""
    broker = await JetStreamBroker.connect(own_nats.access(OPERATOR))
    try:
        await broker.ensure_topology()
        assert await broker.fetch("account", 10, 0.3) == []  # pulling, nothing there
        own_nats.stop()
        own_nats.start()
        [message] = outgoing(1)
        await broker.publish([message])
        deadline = time.monotonic() + 15
        deliveries = []
        while not deliveries and time.monotonic() < deadline:
            deliveries = await broker.fetch("account", 10, 1.0)
        assert [d.msg_id for d in deliveries] == [message.msg_id]
    finally:
        await broker.close()
