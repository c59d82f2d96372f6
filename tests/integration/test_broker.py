"""The JetStream broker: topology, deduplication by message id, publishing through errors."""

from __future__ import annotations

import asyncio

import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, StorageType

from oms.kernel.broker import (
    ACK_WAIT,
    MAX_DELIVER,
    MSG_ID,
    SERVER_MAX_DELIVER,
    JetStreamBroker,
    Outgoing,
    PublishAborted,
)
from oms.kernel.market import MARKET_STREAM
from oms.kernel.nats_access import NatsAccess
from oms.kernel.topology import CONSUMERS, EVENTS_STREAM
from tests.integration.conftest import delete_streams, eventually, stream_messages


async def test_ensure_topology_creates_durable_streams_and_consumers_idempotently(
    broker: JetStreamBroker, js: JetStreamContext
) -> None:
    await broker.ensure_topology()  # a second replica starting

    events = (await js.stream_info(EVENTS_STREAM)).config
    assert events.subjects == ["oms.order.>", "oms.funds.>"]  # not the market's
    assert events.storage == StorageType.FILE
    assert (events.duplicate_window or 0) >= 120
    for consumer in CONSUMERS.values():  # each consumer's dead letters in a stream of their own
        dead_letters = (await js.stream_info(consumer.dead_letter_stream)).config
        assert dead_letters.subjects == [f"oms_dlq.{consumer.name}.>"]
        assert dead_letters.storage == StorageType.FILE
    market = (await js.stream_info(MARKET_STREAM)).config
    assert market.subjects == ["oms.market.>"]
    assert (market.storage, market.max_msgs_per_subject) == (StorageType.FILE, 1)  # the last values
    assert {
        name: c.filter_subject
        for name in CONSUMERS
        for c in [(await js.consumer_info(EVENTS_STREAM, name)).config]
    } == {"account": "oms.order.>", "order": "oms.funds.>"}
    for name in CONSUMERS:
        consumer = (await js.consumer_info(EVENTS_STREAM, name)).config
        assert consumer.durable_name == name
        assert consumer.ack_policy == AckPolicy.EXPLICIT
        assert (consumer.max_deliver or 0) >= MAX_DELIVER
        assert consumer.ack_wait == ACK_WAIT


async def test_publish_of_the_same_message_id_twice_is_stored_once(
    broker: JetStreamBroker, js: JetStreamContext
) -> None:
    message = Outgoing("oms.order.created", b"{}", "event-1")
    await broker.publish([message, Outgoing("oms.order.created", b"{}", "event-2")])
    await broker.publish([message])

    assert [(m.headers or {})[MSG_ID] for m in await stream_messages(js)] == ["event-1", "event-2"]


async def test_publish_retries_until_the_stream_exists_then_stores_each_message_once(
    js: JetStreamContext, operator: NatsAccess
) -> None:
    await delete_streams(js)
    broker = await JetStreamBroker.connect(operator)
    retries: list[int] = []
    try:
        publishing = asyncio.create_task(
            broker.publish(
                [Outgoing("oms.funds.reserved", b"{}", f"e{i}") for i in range(3)], on_retry=retries.append
            )
        )

        async def retried() -> bool:
            return bool(retries)

        await eventually(retried, what="a publish retried")
        assert not publishing.done()
        await broker.ensure_topology()
        await asyncio.wait_for(publishing, 10)
    finally:
        await broker.close()

    assert retries and all(count == 3 for count in retries)
    assert [(m.headers or {})[MSG_ID] for m in await stream_messages(js)] == ["e0", "e1", "e2"]


async def test_publish_gives_up_only_when_asked(js: JetStreamContext, operator: NatsAccess) -> None:
    await delete_streams(js)
    broker = await JetStreamBroker.connect(operator)
    attempts: list[int] = []
    try:
        with pytest.raises(PublishAborted):
            await broker.publish(
                [Outgoing("oms.order.created", b"{}", "lost")],
                give_up=lambda: len(attempts) >= 2,
                on_retry=attempts.append,
            )
    finally:
        await broker.close()
    assert attempts == [1, 1]


async def test_ensure_topology_brings_an_older_stream_and_consumer_up_to_date(
    js: JetStreamContext, operator: NatsAccess
) -> None:
    await delete_streams(js)
    await js.add_stream(name=EVENTS_STREAM, subjects=["oms.>"], storage=StorageType.FILE, duplicate_window=10)
    await js.add_consumer(
        EVENTS_STREAM,
        durable_name="account",
        filter_subject="oms.order.>",
        ack_policy=AckPolicy.EXPLICIT,
        max_deliver=2,
    )
    broker = await JetStreamBroker.connect(operator)
    try:
        await broker.ensure_topology()
    finally:
        await broker.close()

    events = (await js.stream_info(EVENTS_STREAM)).config
    assert events.duplicate_window == 120
    assert events.subjects == ["oms.order.>", "oms.funds.>"]  # given up `oms.>` for the market stream
    assert (await js.stream_info(MARKET_STREAM)).config.subjects == ["oms.market.>"]
    assert (await js.consumer_info(EVENTS_STREAM, "account")).config.max_deliver == SERVER_MAX_DELIVER
