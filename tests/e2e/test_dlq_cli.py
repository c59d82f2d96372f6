"""`oms dlq list` and `oms dlq replay` against a running system: messages the consumers cannot read at all
are dead-lettered at once, listed with their error, and replayed to where they came from.

(A valid event that keeps failing, retried and then dead-lettered, is tested at kernel level in
tests/integration/test_dlq.py.)
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from oms.kernel.broker import JetStreamBroker
from oms.kernel.dlq import list_dead_letters
from oms.kernel.nats_access import NatsAccess, connect_nats
from oms.kernel.permissions import OPERATOR
from oms.kernel.topology import DLQ_STREAMS, EVENTS_STREAM
from tests.e2e.api import Api
from tests.e2e.conftest import RunningSystem

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Letter:
    seq: int
    subject: str
    consumer: str
    error: str
    payload: bytes

    @property
    def id(self) -> str:
        return f"{self.consumer}:{self.seq}"


def operator(system: RunningSystem) -> NatsAccess:
    return system.broker_access(OPERATOR)


def oms(system: RunningSystem, *args: str) -> subprocess.CompletedProcess[str]:
    """`oms ARGS --data-dir …` as an operator runs it next to the running system (a wide terminal, so that
    the table is not folded)."""
    return subprocess.run(
        [sys.executable, "-m", "oms", *args, "--data-dir", str(system.data_dir)],
        env={**system.env, "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=90,
    )


async def _publish(access: NatsAccess, subject: str, payload: bytes, headers: dict[str, str] | None) -> None:
    nc = await connect_nats(access, once=True)
    try:
        await nc.jetstream().publish(subject, payload, headers=headers)
    finally:
        await nc.close()


def publish(system: RunningSystem, subject: str, payload: bytes, msg_id: str | None = None) -> None:
    """Publish straight to JetStream, as a misbehaving producer would (acknowledged by the stream)."""
    headers = {"Nats-Msg-Id": msg_id} if msg_id else None
    asyncio.run(_publish(operator(system), subject, payload, headers))


async def _letters(access: NatsAccess) -> list[Letter]:
    broker = await JetStreamBroker.connect(access, once=True)
    try:
        return [
            Letter(d.seq, d.subject, d.consumer, d.error, d.payload) for d in await list_dead_letters(broker)
        ]
    finally:
        await broker.close()


def letters(system: RunningSystem) -> list[Letter]:
    return asyncio.run(_letters(operator(system)))


def wait_letters(system: RunningSystem, count: int, timeout: float = 20) -> list[Letter]:
    """The dead letters once there are `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        found = letters(system)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def wait_replaced(system: RunningSystem, old: list[Letter], timeout: float = 20) -> list[Letter]:
    """The dead letters once every one of `old` has left the queue and as many have come back."""
    gone = {x.id for x in old}
    deadline = time.monotonic() + timeout
    while True:
        found = letters(system)
        if (len(found) >= len(old) and not {x.id for x in found} & gone) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


async def _stream_counts(access: NatsAccess) -> dict[str, int]:
    nc = await connect_nats(access, once=True)
    try:
        js = nc.jetstream()
        return {name: (await js.stream_info(name)).state.messages for name in (EVENTS_STREAM, *DLQ_STREAMS)}
    finally:
        await nc.close()


def listed_rows(output: str) -> dict[str, str]:
    """The table rows of `oms dlq list`, by dead letter id (`account:3`)."""
    rows = {}
    for line in output.splitlines():
        match = re.match(r"^\W*([a-z]+:\d+)\s*│", line)
        if match:
            rows[match.group(1)] = line
    return rows


@pytest.fixture(scope="module")
def dlq_system(system: RunningSystem) -> Iterator[RunningSystem]:
    """The module's system, its dead-letter queue empty to begin with."""
    assert letters(system) == []
    yield system


def test_malformed_message_is_dead_lettered_listed_and_replayed_back_into_the_queue(
    dlq_system: RunningSystem,
) -> None:
    system = dlq_system
    publish(system, "oms.order.created", b"not json", msg_id=f"garbage-{uuid.uuid4()}")

    [letter] = wait_letters(system, 1)
    assert (letter.subject, letter.consumer, letter.payload) == ("oms.order.created", "account", b"not json")
    assert letter.error.startswith("malformed event:"), letter.error

    listed = oms(system, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    rows = listed_rows(listed.stdout)
    assert list(rows) == [letter.id] == [f"account:{letter.seq}"], listed.stdout
    assert "oms.order.created" in rows[letter.id]
    assert "malformed event" in rows[letter.id]
    as_json = json.loads(oms(system, "dlq", "list", "--json").stdout)["deadLetters"]
    assert [(x["id"], x["subject"], x["consumer"]) for x in as_json] == [
        (letter.id, "oms.order.created", "account")
    ]
    assert as_json[0]["error"].startswith("malformed event:")

    replayed = oms(system, "dlq", "replay", letter.id)
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1 dead letter(s)" in replayed.stdout

    # Still not an event: the consumer dead-letters it again, under a new queue position; the old one is gone.
    [again] = wait_replaced(system, [letter])
    assert again.seq > letter.seq
    assert (again.subject, again.consumer, again.payload) == ("oms.order.created", "account", b"not json")
    assert again.error.startswith("malformed event:")
    assert list(listed_rows(oms(system, "dlq", "list").stdout)) == [again.id]

    gone = oms(system, "dlq", "replay", letter.id)
    assert gone.returncode == 1
    assert f"no dead letter {letter.id}" in gone.stderr
    assert len(gone.stderr.strip().splitlines()) == 1

    assert oms(system, "dlq", "replay", str(again.seq)).returncode == 0  # the seq alone, when unambiguous
    [third] = wait_replaced(system, [again])
    assert third.seq > again.seq and third.payload == b"not json"


def test_replay_all_sends_every_dead_letter_back_to_its_consumer(dlq_system: RunningSystem) -> None:
    system = dlq_system
    before = {x.id for x in letters(system)}
    # One for each consumer: the account reads oms.order.>, the order service oms.funds.>; no message id.
    publish(system, "oms.funds.reserved", b'{"type": "funds.exploded", "id": 1}')
    publish(system, "oms.order.canceled", b"\xff\xfe binary")
    found = wait_letters(system, len(before) + 2)
    assert len(found) == len(before) + 2
    new = {x.subject: x for x in found if x.id not in before}
    assert new["oms.funds.reserved"].consumer == "order"
    assert new["oms.order.canceled"].consumer == "account"
    assert all(x.error.startswith("malformed event:") for x in new.values())

    replayed = oms(system, "dlq", "replay", "--all")
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed {len(found)} dead letter(s)" in replayed.stdout

    back = wait_replaced(system, found)
    assert sorted(x.subject for x in back) == sorted(x.subject for x in found)
    for consumer in ("account", "order"):  # each queue counts on
        assert min(x.seq for x in back if x.consumer == consumer) > max(
            x.seq for x in found if x.consumer == consumer
        )
    assert {x.payload for x in back} == {x.payload for x in found}


def test_replay_needs_exactly_one_of_seq_and_all(dlq_system: RunningSystem) -> None:
    for args in ([], ["1", "--all"], ["abc"]):
        result = oms(dlq_system, "dlq", "replay", *args)
        assert result.returncode != 0, args
        assert result.stderr.strip(), args


def test_the_system_still_works_after_the_malformed_messages(dlq_system: RunningSystem) -> None:
    api = Api(dlq_system)
    admin, customer = api.admin(), api.customer()
    api.deposit(admin, customer, "TRY", "1000")
    bought = api.place(customer, "BUY", "AAPL", "1", api.marketable(customer, "BUY"))
    assert api.wait_order(customer, bought)["status"] == "MATCHED"
    counts = asyncio.run(_stream_counts(operator(dlq_system)))
    # Replayed letters are removed, not kept.
    assert sum(counts[name] for name in DLQ_STREAMS) == len(letters(dlq_system))
