"""Poison and malformed messages go to the dead-letter queue; a replay brings them back."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from nats.js import JetStreamContext

from oms.kernel.broker import MAX_DELIVER, JetStreamBroker, Outgoing
from oms.kernel.consumer import ConsumerRunner, RetryPolicy, one_at_a_time
from oms.kernel.dlq import ReplayRefused, apply_dead_letter, list_dead_letters, replay
from oms.kernel.events import Envelope, FundsReserved
from oms.kernel.nats_access import NatsAccess
from oms.kernel.topology import CONSUMERS, SHARED_DLQ_STREAM
from tests.integration.conftest import canceled_event, message_count

FAST = RetryPolicy(nak_delays=(0.05,))


class FlakyHandler:
    """Fails every event while `poisoned`; records what it handled."""

    def __init__(self) -> None:
        self.poisoned = True
        self.handled: list[Envelope] = []
        self.failures = 0

    async def __call__(self, event: Envelope) -> None:
        if self.poisoned:
            self.failures += 1
            raise ValueError("balance row missing\nfor this customer")
        self.handled.append(event)


async def consume_until(runner: ConsumerRunner, done: Callable[[], object], rounds: int = 100) -> None:
    for _ in range(rounds):
        if done():
            return
        await runner.run_once()
    raise AssertionError("condition not reached")


async def test_poison_message_is_dead_lettered_after_max_deliveries_and_replay_processes_it(
    broker: JetStreamBroker, js: JetStreamContext
) -> None:
    event = canceled_event()
    await broker.publish([Outgoing(event.subject, event.to_json(), str(event.id))])
    handler = FlakyHandler()
    runner = ConsumerRunner(broker, "account", one_at_a_time(handler), policy=FAST, fetch_timeout=0.2)

    await consume_until(runner, lambda: handler.failures == MAX_DELIVER)
    await runner.run_once()
    assert handler.failures == MAX_DELIVER  # no delivery after the last one

    [letter] = await list_dead_letters(broker)
    assert letter.subject == "oms.order.canceled"
    assert letter.consumer == "account"
    assert letter.deliveries == MAX_DELIVER
    assert letter.error == "ValueError: balance row missing for this customer"
    assert letter.msg_id == str(event.id)
    assert letter.payload == event.to_json()

    handler.poisoned = False
    assert letter.id == f"account:{letter.seq}"
    assert await replay(broker, letter.id) == 1
    await consume_until(runner, lambda: handler.handled)
    assert handler.handled == [event]
    assert await list_dead_letters(broker) == []
    assert await message_count(js, CONSUMERS["account"].dead_letter_stream) == 0


async def test_malformed_messages_are_dead_lettered_at_once(broker: JetStreamBroker) -> None:
    await broker.publish(
        [
            Outgoing("oms.order.created", b"not json", "m1"),
            Outgoing("oms.order.created", b'{"type": "order.exploded"}', "m2"),
        ]
    )
    handler = FlakyHandler()
    runner = ConsumerRunner(broker, "account", one_at_a_time(handler), policy=FAST, fetch_timeout=0.2)

    assert await runner.run_once() == 2

    letters = await list_dead_letters(broker)
    assert [(letter.msg_id, letter.deliveries) for letter in letters] == [("m1", 1), ("m2", 1)]
    assert all(letter.error.startswith("malformed event:") for letter in letters)
    assert handler.failures == 0


async def test_replay_all_sends_every_dead_letter_back(broker: JetStreamBroker) -> None:
    events = [canceled_event(), canceled_event()]
    await broker.publish([Outgoing(e.subject, e.to_json(), str(e.id)) for e in events])
    handler = FlakyHandler()
    runner = ConsumerRunner(broker, "account", one_at_a_time(handler), policy=FAST, fetch_timeout=0.2)
    await consume_until(runner, lambda: handler.failures == 2 * MAX_DELIVER)
    assert len(await list_dead_letters(broker)) == 2

    handler.poisoned = False
    assert await replay(broker, "all") == 2
    await consume_until(runner, lambda: len(handler.handled) == 2)
    assert sorted(e.id for e in handler.handled) == sorted(e.id for e in events)
    assert await list_dead_letters(broker) == []


async def test_an_event_on_a_subject_its_producer_may_not_publish_is_dead_lettered_unapplied(
    broker: JetStreamBroker,
) -> None:
    """The operator (who may publish anything) puts the account's funds.reserved on oms.order.created."""
    forged = Envelope.of(
        FundsReserved(
            order_id=uuid.uuid4(),
            customer_id=uuid.uuid4(),
            occurred_at=datetime.now(UTC),
            reservation_id=uuid.uuid4(),
            asset_name="TRY",
            amount=Decimal(10**9),
        )
    )
    retyped = canceled_event()
    await broker.publish(
        [
            Outgoing("oms.order.created", forged.to_json(), str(forged.id)),
            Outgoing("oms.order.created", retyped.to_json(), str(retyped.id)),  # a type on another's subject
        ]
    )
    handler = FlakyHandler()
    handler.poisoned = False
    runner = ConsumerRunner(broker, "account", one_at_a_time(handler), policy=FAST, fetch_timeout=0.2)

    assert await runner.run_once() == 2

    assert handler.handled == []
    letters = await list_dead_letters(broker)
    assert [(x.msg_id, x.deliveries) for x in letters] == [(str(forged.id), 1), (str(retyped.id), 1)]
    assert letters[0].error == (
        "refused: a 'funds.reserved' event on oms.order.created; the account consumer applies only events of"
        " the order service (order.*), each on its own subject"
    )
    assert letters[1].error.startswith("refused: a 'order.canceled' event on oms.order.created")


async def test_a_service_applies_its_dead_letter_with_its_own_handler_without_publishing_events(
    broker: JetStreamBroker, nats_identity: Callable[[str], NatsAccess], js: JetStreamContext
) -> None:
    """The ops endpoint's replay: the account identity may not publish oms.order.*, so the dead letter goes
    through the account's handler, once, and leaves the queue."""
    event = canceled_event()
    await broker.publish([Outgoing(event.subject, event.to_json(), str(event.id))])
    account = await JetStreamBroker.connect(nats_identity("account"))
    try:
        handler = FlakyHandler()
        runner = ConsumerRunner(account, "account", one_at_a_time(handler), policy=FAST, fetch_timeout=0.2)
        await consume_until(runner, lambda: handler.failures == MAX_DELIVER)
        [letter] = await list_dead_letters(account, consumer="account")
        events_before = await message_count(js)

        with pytest.raises(ReplayRefused, match="still fails: ValueError: balance row missing"):
            await apply_dead_letter(account, letter, one_at_a_time(handler))
        assert await list_dead_letters(account, consumer="account") == [letter]

        handler.poisoned = False
        await apply_dead_letter(account, letter, one_at_a_time(handler))
        assert handler.handled == [event]
        assert await list_dead_letters(account, consumer="account") == []
        assert await message_count(js) == events_before  # nothing republished
    finally:
        await account.close()


async def test_a_dead_letter_its_consumer_would_refuse_is_not_applied_by_a_replay(
    broker: JetStreamBroker,
) -> None:
    forged = canceled_event()
    await broker.publish([Outgoing("oms.order.matched", forged.to_json(), str(forged.id))])
    handler = FlakyHandler()
    handler.poisoned = False
    runner = ConsumerRunner(broker, "account", one_at_a_time(handler), policy=FAST, fetch_timeout=0.2)
    await runner.run_once()
    [letter] = await list_dead_letters(broker)

    with pytest.raises(
        ReplayRefused, match=re.escape("refused: a 'order.canceled' event on oms.order.matched")
    ):
        await apply_dead_letter(broker, letter, one_at_a_time(handler))
    assert handler.handled == []
    assert await list_dead_letters(broker) == [letter]


async def test_a_dead_letter_is_named_by_its_queue_when_both_queues_have_its_seq(
    broker: JetStreamBroker,
) -> None:
    await broker.publish([Outgoing("oms.order.created", b"not json", "a1")])
    await broker.publish([Outgoing("oms.funds.reserved", b"not json either", "o1")])
    for consumer in ("account", "order"):
        runner = ConsumerRunner(
            broker, consumer, one_at_a_time(FlakyHandler()), policy=FAST, fetch_timeout=0.2
        )
        assert await runner.run_once() == 1
    letters = await list_dead_letters(broker)
    assert [letter.id for letter in letters] == ["account:1", "order:1"]

    with pytest.raises(LookupError, match="more than one queue: give one of account:1, order:1"):
        await replay(broker, "1")
    with pytest.raises(LookupError, match="not a dead letter"):
        await replay(broker, "auth:1")
    assert await replay(broker, "order:1") == 1
    assert [letter.id for letter in await list_dead_letters(broker)] == ["account:1"]
    assert await replay(broker, "1") == 1  # unambiguous now
    with pytest.raises(LookupError, match="no dead letter account:1"):
        await replay(broker, "account:1")


async def test_the_shared_queue_of_an_older_data_folder_is_moved_into_the_consumers_queues(
    broker: JetStreamBroker, js: JetStreamContext
) -> None:
    """Until 2026-12-06 one OMS_DLQ stream (`oms_dlq.>`) held every consumer's dead letters; the next `oms up`
    (ensure_topology) moves each into its consumer's own queue, headers and payload kept, and drops it."""
    for stream in (c.dead_letter_stream for c in CONSUMERS.values()):
        await js.delete_stream(stream)
    await js.add_stream(name=SHARED_DLQ_STREAM, subjects=["oms_dlq.>"])
    old = [("account", "oms.order.created", b"poison 1"), ("order", "oms.funds.reserved", b"poison 2")]
    for consumer, subject, payload in old:
        headers = {"Oms-Original-Subject": subject, "Oms-Error": "boom", "Oms-Delivery-Count": "5"}
        await js.publish(f"oms_dlq.{consumer}.{subject}", payload, headers=headers)

    await broker.ensure_topology()
    await broker.ensure_topology()  # a second start: nothing left to move, nothing moved twice

    letters = await list_dead_letters(broker)
    assert [(x.consumer, x.subject, x.payload, x.error, x.deliveries) for x in letters] == [
        (consumer, subject, payload, "boom", 5) for consumer, subject, payload in old
    ]
    assert [s.config.name for s in await js.streams_info() if s.config.name == SHARED_DLQ_STREAM] == []
