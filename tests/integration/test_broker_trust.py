"""The broker's trust boundaries on a real NATS server with authorization (docs/decisions/009): nobody
connects without credentials, and each identity may do only its own job."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats
import nats.errors
import nkeys
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from oms.kernel.broker import JetStreamBroker, Outgoing
from oms.kernel.consumer import ConsumerRunner, one_at_a_time
from oms.kernel.market import MARKET_STREAM
from oms.kernel.nats_access import NatsAccess, connect_nats
from oms.kernel.permissions import BACKOFFICE, IDENTITIES, MARKET, OPERATOR
from oms.kernel.topology import BACKOFFICE_BUCKET, CONSUMERS, EVENTS_STREAM, PRODUCERS
from oms.runtime.identities import ensure_identities
from oms.runtime.nats import EmbeddedNats
from tests.integration.conftest import canceled_event, eventually, message_count

REFUSED_IN = 0.5  # seconds a refused request waits for the answer that never comes


class Client:
    """A connection as one identity that records the server's permission violations."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.nc: NatsClient | None = None

    async def connect(self, access: NatsAccess) -> Client:
        self.nc = await connect_nats(access, once=True, error_cb=self._record)
        return self

    async def _record(self, exc: Exception) -> None:
        self.violations.append(str(exc))

    @property
    def js(self) -> JetStreamContext:
        assert self.nc is not None
        return self.nc.jetstream(timeout=REFUSED_IN)

    async def refused(self, action: Callable[[], Awaitable[object]], what: str) -> None:
        """`action` gets no answer, and the server reports a permissions violation naming `what`."""
        before = len(self.violations)
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError, TimeoutError)):
            await action()
        for _ in range(50):
            if any(what.lower() in v.lower() for v in self.violations[before:]):
                return
            await asyncio.sleep(0.02)
        pytest.fail(f"no permissions violation for {what}: {self.violations[before:]}")

    async def subscription_refused(self, subject: str) -> None:
        assert self.nc is not None
        before = len(self.violations)
        await self.nc.subscribe(subject)
        await self.nc.flush()
        for _ in range(50):
            if any(
                "subscription" in v.lower() and subject.lower() in v.lower() for v in self.violations[before:]
            ):
                return
            await asyncio.sleep(0.02)
        pytest.fail(f"subscribing to {subject} was not refused: {self.violations[before:]}")


@pytest.fixture
async def as_identity(
    js: JetStreamContext, nats_identity: Callable[[str], NatsAccess]
) -> AsyncIterator[Callable[[str], Awaitable[Client]]]:
    """Connect as an identity (the streams created, empty); every connection is closed afterwards."""
    clients: list[Client] = []

    async def connect(identity: str) -> Client:
        clients.append(await Client().connect(nats_identity(identity)))
        return clients[-1]

    yield connect
    for client in clients:
        if client.nc is not None:
            await client.nc.close()


async def test_a_connection_without_credentials_is_refused(nats_server: EmbeddedNats) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(servers=[nats_server.url], allow_reconnect=False, connect_timeout=2)


async def test_a_connection_with_a_key_the_server_does_not_know_is_refused(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    stranger = tmp_path / "stranger.nk"
    stranger.write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    access = NatsAccess(servers=(nats_server.url,), identity="order", nkey_file=stranger)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect_nats(access, once=True)


async def test_the_order_relay_may_publish_order_events_but_not_funds_events(
    as_identity: Callable[[str], Awaitable[Client]], js: JetStreamContext
) -> None:
    relay = await as_identity(PRODUCERS["order"].relay)

    await relay.refused(lambda: relay.js.publish("oms.funds.reserved", b"{}"), "oms.funds.reserved")
    assert await message_count(js) == 0
    ack = await relay.js.publish("oms.order.created", b"{}", headers={"Nats-Msg-Id": "real"})
    assert ack.stream == EVENTS_STREAM
    assert await message_count(js) == 1


async def test_the_account_relay_may_not_publish_order_events(
    as_identity: Callable[[str], Awaitable[Client]], js: JetStreamContext
) -> None:
    relay = await as_identity(PRODUCERS["account"].relay)
    for subject in ("oms.order.created", "oms.order.matched", "oms_dlq.order.oms.funds.reserved"):
        await relay.refused(lambda s=subject: relay.js.publish(s, b"{}"), subject)
    await relay.subscription_refused("oms.>")
    assert await message_count(js) == await message_count(js, CONSUMERS["order"].dead_letter_stream) == 0


@pytest.mark.parametrize("service", list(CONSUMERS))
async def test_a_service_may_not_change_streams_read_events_or_publish_them(
    service: str, as_identity: Callable[[str], Awaitable[Client]], js: JetStreamContext
) -> None:
    await js.publish("oms.order.canceled", canceled_event().to_json())
    client = await as_identity(service)
    own_js = client.js

    await client.refused(lambda: own_js.purge_stream(EVENTS_STREAM), f"$JS.API.STREAM.PURGE.{EVENTS_STREAM}")
    own_dead_letters = CONSUMERS[service].dead_letter_stream
    await client.refused(
        lambda: own_js.purge_stream(own_dead_letters), f"$JS.API.STREAM.PURGE.{own_dead_letters}"
    )
    await client.refused(
        lambda: own_js.delete_stream(EVENTS_STREAM), f"$JS.API.STREAM.DELETE.{EVENTS_STREAM}"
    )
    spy = ConsumerConfig(durable_name="spy", ack_policy=AckPolicy.NONE)
    await client.refused(lambda: own_js.add_consumer(EVENTS_STREAM, spy), "$JS.API.CONSUMER.")
    await client.refused(lambda: own_js.publish("oms.order.created", b"{}"), "oms.order.created")
    await client.refused(lambda: own_js.publish("oms.funds.reserved", b"{}"), "oms.funds.reserved")
    await client.subscription_refused("oms.>")
    await client.subscription_refused("oms_dlq.>")
    await client.subscription_refused(f"_INBOX.{PRODUCERS['order'].relay}.>")  # another identity's replies

    assert await message_count(js) == 1  # neither purged nor added to
    assert sorted(c.name for c in await js.consumers_info(EVENTS_STREAM)) == sorted(CONSUMERS)


async def test_a_service_consumes_only_its_own_durable_consumer(
    operator: NatsAccess, nats_identity: Callable[[str], NatsAccess], js: JetStreamContext
) -> None:
    publisher = await JetStreamBroker.connect(operator)
    account = await JetStreamBroker.connect(nats_identity("account"))
    try:
        event = canceled_event()
        await publisher.publish([Outgoing(event.subject, event.to_json(), str(event.id))])
        [delivery] = await account.fetch("account", 10, 5.0)
        await delivery.ack()
        await eventually(lambda: _settled(account, "account"), within=5, what="the account's ack to be taken")
        await publisher.publish([Outgoing("oms.funds.reserved", b"{}", "for-the-order-service")])
        assert await account.fetch("order", 10, 1.0) == []  # its pull requests are refused
        assert (await js.consumer_info(EVENTS_STREAM, "order")).num_pending == 1
    finally:
        await account.close()
        await publisher.close()


async def _settled(broker: JetStreamBroker, consumer: str) -> bool:
    return (await broker.consumer_stats(consumer)).ack_pending == 0


async def test_the_back_office_may_only_ask_for_jetstreams_account_info_and_use_its_own_bucket(
    as_identity: Callable[[str], Awaitable[Client]],
) -> None:
    backoffice = await as_identity(BACKOFFICE)
    assert (await backoffice.js.account_info()).streams >= 2
    bucket = await backoffice.js.key_value(BACKOFFICE_BUCKET)
    await bucket.put("trust-probe", b"mine")
    assert (await bucket.get("trust-probe")).value == b"mine"
    await bucket.delete("trust-probe")
    await backoffice.refused(lambda: backoffice.js.stream_info(EVENTS_STREAM), "$JS.API.STREAM.INFO")
    await backoffice.refused(lambda: backoffice.js.publish("$KV.OTHER.key", b"{}"), "$KV.OTHER.key")
    await backoffice.refused(
        lambda: backoffice.js.get_msg(EVENTS_STREAM, subject="oms.order.created", direct=True),
        f"$JS.API.DIRECT.GET.{EVENTS_STREAM}",
    )
    await backoffice.refused(lambda: backoffice.js.publish("oms.order.created", b"{}"), "oms.order.created")
    await backoffice.subscription_refused("oms.>")


async def test_the_market_feed_may_publish_market_data_and_nothing_else(
    as_identity: Callable[[str], Awaitable[Client]], js: JetStreamContext
) -> None:
    market = await as_identity(MARKET)
    ack = await market.js.publish("oms.market.quote.AAPL", b"{}", headers={"Nats-Msg-Id": "AAPL:1"})
    assert ack.stream == MARKET_STREAM
    for subject in ("oms.order.created", "oms.order.matched", "oms.funds.reserved", "oms_dlq.order.x"):
        await market.refused(lambda s=subject: market.js.publish(s, b"{}"), subject)
    await market.refused(
        lambda: market.js.purge_stream(MARKET_STREAM), f"$JS.API.STREAM.PURGE.{MARKET_STREAM}"
    )
    await market.subscription_refused("oms.>")
    assert await message_count(js) == await message_count(js, CONSUMERS["order"].dead_letter_stream) == 0
    assert await message_count(js, MARKET_STREAM) == 1


@pytest.mark.parametrize("identity", sorted(set(IDENTITIES) - {OPERATOR, MARKET}))
async def test_no_other_identity_may_publish_market_data(
    identity: str, as_identity: Callable[[str], Awaitable[Client]], js: JetStreamContext
) -> None:
    client = await as_identity(identity)
    for subject in ("oms.market.quote.AAPL", "oms.market.instrument.AAPL"):
        await client.refused(lambda s=subject: client.js.publish(s, b"{}"), subject)
    assert await message_count(js, MARKET_STREAM) == 0


async def test_the_operator_may_do_all_of_it(operator: NatsAccess, js: JetStreamContext) -> None:
    client = await Client().connect(operator)
    assert client.nc is not None
    try:
        seen: list[str] = []

        async def watch(msg: nats.aio.msg.Msg) -> None:
            seen.append(msg.subject)

        await client.nc.subscribe("oms.>", cb=watch)
        await client.js.publish("oms.order.created", b"{}")
        await client.js.publish("oms.funds.reserved", b"{}")
        await client.js.add_consumer(EVENTS_STREAM, ConsumerConfig(durable_name="audit-spy"))
        await client.js.delete_consumer(EVENTS_STREAM, "audit-spy")
        await client.js.purge_stream(EVENTS_STREAM)
        await client.js.delete_stream(CONSUMERS["order"].dead_letter_stream)
        for _ in range(50):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.02)
        assert seen == ["oms.order.created", "oms.funds.reserved"]
        assert await message_count(js) == 0
        assert client.violations == []
    finally:
        await client.nc.close()


def test_identities_are_generated_once_private_and_reused(tmp_path: Path) -> None:
    folder = tmp_path / "secrets" / "nats"
    first = ensure_identities(folder)
    assert sorted(first) == sorted(IDENTITIES) and len(set(first.values())) == len(IDENTITIES)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o600}
    assert ensure_identities(folder) == first  # a restart keeps them
    assert OPERATOR in first and all(key.startswith("U") for key in first.values())


def test_a_kept_identity_that_is_not_a_seed_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "nats"
    ensure_identities(folder)
    (folder / "order.nk").write_text("not a seed")
    with pytest.raises(RuntimeError, match=r"order\.nk is not a NATS nkey seed"):
        ensure_identities(folder)


async def test_a_service_may_not_read_or_remove_another_consumers_dead_letters(
    as_identity: Callable[[str], Awaitable[Client]], broker: JetStreamBroker, js: JetStreamContext
) -> None:
    """A dead letter is an event another service's consumer could not apply: the order service may not read
    (every customer's data) or delete (lose it) the account consumer's, and the reverse."""
    for subject in ("oms.order.created", "oms.funds.reserved"):
        await broker.publish([Outgoing(subject, b"not json", subject)])
    for consumer in CONSUMERS:
        runner = ConsumerRunner(broker, consumer, one_at_a_time(_never_called), fetch_timeout=0.2)
        assert await runner.run_once() == 1
    for service, other in (("order", "account"), ("account", "order")):
        client = await as_identity(service)
        theirs = CONSUMERS[other].dead_letter_stream
        await client.refused(
            lambda s=theirs, j=client.js: j.get_msg(s, seq=1), f"$JS.API.STREAM.MSG.GET.{theirs}"
        )
        await client.refused(
            lambda s=theirs, j=client.js: j.delete_msg(s, 1), f"$JS.API.STREAM.MSG.DELETE.{theirs}"
        )
        mine = await client.js.get_msg(CONSUMERS[service].dead_letter_stream, seq=1)
        assert mine.data == b"not json"
    assert [letter.id for letter in await broker.dead_letters()] == ["account:1", "order:1"]


async def _never_called(event: object) -> None:
    raise AssertionError("a malformed message reached the handler")
