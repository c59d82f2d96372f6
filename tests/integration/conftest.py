"""Fixtures for the messaging kernel's tests: a service database with outbox and inbox, fresh JetStream
streams for every test, and a relay running in a thread."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime

import nats.js.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg

from oms.kernel import inbox, outbox
from oms.kernel.broker import JetStreamBroker
from oms.kernel.events import Envelope, OrderCanceled
from oms.kernel.market import MARKET_STREAM
from oms.kernel.nats_access import NatsAccess, connect_nats
from oms.kernel.permissions import OPERATOR
from oms.kernel.relay import run_relay
from oms.kernel.topology import CONSUMERS, DLQ_STREAMS, EVENTS_STREAM, SHARED_DLQ_STREAM, slot_name
from oms.runtime.nats import EmbeddedNats
from oms.runtime.ports import free_port
from oms.runtime.postgres import EmbeddedPostgres
from tests.conftest import execute


@dataclass
class ServiceDatabase:
    """A database as a service's migration leaves it (outbox, publication, inbox), relayed as `service`."""

    service: str
    url: str


@pytest.fixture
def service_db(make_database: Callable[[str], str]) -> Iterator[ServiceDatabase]:
    service = f"t{uuid.uuid4().hex[:10]}"  # replication slots are per server: one name per test
    url = make_database(service)
    execute(url, outbox.OUTBOX_DDL + outbox.RELAY_SLOTS_DDL + outbox.PUBLICATION_DDL + inbox.INBOX_DDL)
    yield ServiceDatabase(service, url)
    with suppress(Exception):
        execute(url, f"SELECT pg_drop_replication_slot('{slot_name(service)}')")


async def delete_streams(js: JetStreamContext) -> None:
    for stream in (EVENTS_STREAM, SHARED_DLQ_STREAM, *DLQ_STREAMS, MARKET_STREAM):
        with suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(stream)


@pytest.fixture
async def js(operator: NatsAccess) -> AsyncIterator[JetStreamContext]:
    """Raw JetStream access as the operator, the streams another test may have filled deleted and created
    again empty (as `oms up` creates them before the relays and services start)."""
    nc: NatsClient = await connect_nats(operator, once=True)
    context = nc.jetstream()
    await delete_streams(context)
    topology = await JetStreamBroker.connect(operator, once=True)
    await topology.ensure_topology()
    await topology.close()
    yield context
    await nc.close()


@pytest.fixture
async def broker(js: JetStreamContext, operator: NatsAccess) -> AsyncIterator[JetStreamBroker]:
    """The broker as the operator, which may do everything (publish any event, consume any consumer)."""
    connected = await JetStreamBroker.connect(operator)
    yield connected
    await connected.close()


async def stream_messages(js: JetStreamContext, stream: str = EVENTS_STREAM) -> list[RawStreamMsg]:
    """Every message now in `stream`, in stream order."""
    messages: list[RawStreamMsg] = []
    dead_letters = {c.dead_letter_stream: c.dead_letters for c in CONSUMERS.values()}
    subjects = dead_letters.get(stream, "oms.>")
    while True:
        start = (messages[-1].seq or 0) + 1 if messages else 1
        try:
            messages.append(await js.get_msg(stream, seq=start, subject=subjects, next=True))
        except nats.js.errors.NotFoundError:
            return messages


async def message_count(js: JetStreamContext, stream: str = EVENTS_STREAM) -> int:
    try:
        return int((await js.stream_info(stream)).state.messages)
    except nats.js.errors.NotFoundError:  # the relay has not created it yet
        return 0


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)


def canceled_event(reason: str = "test") -> Envelope[OrderCanceled]:
    event = OrderCanceled(
        order_id=uuid.uuid4(), customer_id=uuid.uuid4(), occurred_at=datetime.now(UTC), reason=reason
    )
    return Envelope.of(event)


def wait_until_streaming(db: ServiceDatabase, timeout: float = 15.0) -> None:
    # A walsender holds the slot (while the slot is being created, a normal backend holds it).
    query = (
        "SELECT 1 FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid"
        f" WHERE s.slot_name = '{slot_name(db.service)}'"
    )
    deadline = time.monotonic() + timeout
    while not execute(db.url, query):
        if time.monotonic() > deadline:
            pytest.fail(f"the relay of {db.service} did not start streaming")
        time.sleep(0.05)


@dataclass
class RelayThread:
    """`run_relay` in a thread of the test process, as a supervisor would run it."""

    db: ServiceDatabase
    nats: NatsAccess
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> RelayThread:
        """Start the relay and wait until it streams from its replication slot."""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"relay-{self.db.service}", daemon=True)
        self.thread.start()
        wait_until_streaming(self.db)
        return self

    def _run(self) -> None:
        try:
            run_relay(self.db.service, self.db.url, self.nats, self.stop)
        except BaseException as exc:
            self.error = exc

    def halt(self) -> None:
        if self.thread is not None:
            self.stop.set()
            self.thread.join(timeout=20)
            assert not self.thread.is_alive(), "relay did not stop"
            self.thread = None
        if self.error is not None:
            raise self.error


@pytest.fixture
def relay(service_db: ServiceDatabase, operator: NatsAccess) -> Iterator[RelayThread]:
    """A relay for `service_db` (a service outside the topology: it publishes as the operator), not started
    yet."""
    running = RelayThread(service_db, operator)
    yield running
    running.halt()


@pytest.fixture(scope="module")
def private_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of the module's own, which its tests may stop (and must start again)."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("private-pg"), free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def private_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """A NATS server of the module's own, its streams and consumers made, which its tests may stop (and must
    start again)."""
    server = EmbeddedNats(tmp_path_factory.mktemp("private-nats"), free_port())
    server.start()
    asyncio.run(_create_topology(server.access(OPERATOR)))
    yield server
    server.stop()


async def _create_topology(operator: NatsAccess) -> None:
    broker = await JetStreamBroker.connect(operator, once=True)
    await broker.ensure_topology()
    await broker.close()
